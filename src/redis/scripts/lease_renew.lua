-- Extend a lease that this acquisition still holds. The check is on the token, not the
-- sequence number, so a renewal can run on its own connection while commits (which move
-- the sequence number) are in flight; commits still check the exact value.
--
-- KEYS    for each source list: its source lease string, then its legacy lease string
-- ARGV[1] the acquisition's prefix "<consumer>/<token>."   ARGV[2] TTL in ms
--
-- Returns 1 when all were extended, 0 when any was lost (nothing is extended then).
for _, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if not current or string.sub(current, 1, #ARGV[1]) ~= ARGV[1] then
    return 0
  end
end
for _, key in ipairs(KEYS) do
  redis.call('PEXPIRE', key, ARGV[2])
end
return 1
