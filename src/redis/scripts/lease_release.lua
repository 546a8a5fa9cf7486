-- Give a lease up (graceful shutdown) so a standby replica takes over at once.
--
-- KEYS    for each source list: its source lease string, then its legacy lease string
-- ARGV[1] the acquisition's prefix "<consumer>/<token>."
--
-- Returns how many of the keys were released (a key no longer ours is left alone).
local released = 0
for _, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if current and string.sub(current, 1, #ARGV[1]) == ARGV[1] then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released
