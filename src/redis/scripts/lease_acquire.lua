-- Take the source lease if it is free, or if it was held by a previous life of this same
-- consumer (a restart with the same name takes its own lease back at once).
--
-- KEYS[1] lease string
-- ARGV[1] consumer name   ARGV[2] new lease value "<consumer>/<token>.<seq>"   ARGV[3] TTL in ms
--
-- Returns 1 when the lease is now ARGV[2], else 0.
local current = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. '/'
if not current or string.sub(current, 1, #mine) == mine then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
