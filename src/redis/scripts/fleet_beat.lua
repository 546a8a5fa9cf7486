-- A replica's beat in its deployment's fleet: mark it alive, forget replicas that stopped
-- beating, and count the live ones. Times are Redis's own clock, so hosts' clocks never
-- matter.
--
-- KEYS[1] the fleet: a sorted set of consumer names scored by their last beat (ms)
-- ARGV[1] this replica's consumer name
-- ARGV[2] how long, in ms, a replica counts as alive after its last beat
--
-- Returns the live replicas' consumer names, this one included.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local alive = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - alive))
redis.call('PEXPIRE', KEYS[1], alive * 10)
return redis.call('ZRANGE', KEYS[1], 0, -1)
