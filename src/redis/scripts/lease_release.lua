-- Give the lease up (graceful shutdown) so a standby replica takes over at once.
--
-- KEYS[1] lease string
-- ARGV[1] lease value "<consumer>/<token>.<seq>"
--
-- Returns 1 when released, 0 when it was not ours any more.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
