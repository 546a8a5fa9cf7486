-- Move one dead-letter record back onto the queue its message came from (`dlq replay`).
--
-- KEYS[1]  the dead-letter list
-- KEYS[2]  the record's source_queue: where the original message goes back to
-- ARGV[1]  the record, byte for byte as the caller read it at index ARGV[3]
-- ARGV[2]  the original message bytes, decoded from the record by the caller
-- ARGV[3]  the record's index in KEYS[1], counted from the tail (-1 = the oldest record)
-- ARGV[4]  a placeholder unique to this caller, used to remove a record that is not at the
--          tail (records the caller left in place stay behind it)
-- ARGV[5]  when ARGV[3] < -1: the record the caller left in place at index ARGV[3] + 1, the
--          one just behind ARGV[1]
-- ARGV[6]  "1" for a record written by reference: the message is not in ARGV[2] but is the
--          one element of the list KEYS[3], which is moved back inside Redis and deleted
--
-- Returns 1 when the record was still at that index and was moved: the message is LPUSHed
-- (like a new message from a producer) and the record removed. Returns 0, changing nothing,
-- when the record is no longer there (another replay moved it, or the list was purged); the
-- caller then reads the same index again. Returns -1, changing nothing, when the record
-- behind it is not the caller's: another replay removed a record the caller had left in
-- place, so the caller's index is stale and it starts again from the tail.
--
-- The caller decides from ARGV[1] alone whether to move the record (its failed_at, the
-- filters), so checking that exactly those bytes are at the index makes that decision hold
-- at the moment of the move.
local index = tonumber(ARGV[3])
if index < -1 and redis.call('LINDEX', KEYS[1], index + 1) ~= ARGV[5] then
  return -1
end
if redis.call('LINDEX', KEYS[1], index) ~= ARGV[1] then
  return 0
end
-- Returns -2, changing nothing, for a record by reference whose list is gone or does not hold
-- exactly one element (the daemon makes each such list with one).
local message = ARGV[2]
if ARGV[6] == '1' then
  if redis.call('TYPE', KEYS[3])['ok'] ~= 'list' or redis.call('LLEN', KEYS[3]) ~= 1 then
    return -2
  end
  message = redis.call('LINDEX', KEYS[3], 0)
end
-- Push first: if the target is not a list this fails before anything has changed.
redis.call('LPUSH', KEYS[2], message)
if ARGV[6] == '1' then redis.call('DEL', KEYS[3]) end
if index == -1 then
  redis.call('RPOP', KEYS[1])
else
  -- LSET and LREM run inside this script, so nothing sees the placeholder, and it is unique
  -- to the caller, so the LREM (first match from the tail) removes exactly this position.
  redis.call('LSET', KEYS[1], index, ARGV[4])
  redis.call('LREM', KEYS[1], -1, ARGV[4])
end
return 1
