-- Set the dead-letter list aside for `dlq purge`, in one step, so records a daemon writes
-- meanwhile land on a fresh list.
--
-- KEYS[1] the dead-letter list      KEYS[2] the name to rename it to
--
-- Returns how many records it held (0: nothing to purge, nothing renamed).
local n = redis.call('LLEN', KEYS[1])
if n > 0 then redis.call('RENAME', KEYS[1], KEYS[2]) end
return n
