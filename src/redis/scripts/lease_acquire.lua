-- Take a source's lease if it is free, or if it was held by a previous life of this same
-- consumer (a restart with the same name takes its own lease back at once). The source
-- lease and the legacy lease of earlier releases are taken together or not at all.
--
-- KEYS    for each source list: its source lease string, then its legacy lease string
--         (<prefix>:lease:<source>); all are taken together or none is
-- ARGV[1] consumer name   ARGV[2] new lease value "<consumer>/<token>.0"   ARGV[3] TTL in ms
--
-- Returns "ok" when every lease now holds ARGV[2]; otherwise the value that stands in the
-- way (the other holder's "<consumer>/<token>.<seq>"), and nothing changes.
local mine = ARGV[1] .. '/'
for _, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if current and string.sub(current, 1, #mine) ~= mine then
    return current
  end
end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[2], 'PX', ARGV[3])
end
return 'ok'
