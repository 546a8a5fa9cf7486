-- Extend the lease if it still holds exactly this value.
--
-- KEYS[1] lease string
-- ARGV[1] lease value "<consumer>/<token>.<seq>"   ARGV[2] TTL in ms
--
-- Returns 1 when extended, 0 when the lease was lost.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
