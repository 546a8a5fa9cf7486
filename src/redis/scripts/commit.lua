-- Finish a commit. Runs inside MULTI/EXEC right after the LPUSHes of the envelopes and dead
-- letters, so nothing can interleave: either the source is trimmed and the pushes stay, or
-- the pushes are undone and the source is untouched.
--
-- KEYS[1] processing list    KEYS[2] dead-letter list    KEYS[3] stats hash
-- KEYS[4..3+3m] for each of the m source lists, highest priority first: the list, its source
--         lease string and its legacy lease string. The first source's lease carries the
--         chain (below); every other lease must hold the same acquisition.
-- KEYS[4+3m..] the lists that receive the messages dead-lettered by reference, one each
-- ARGV[1] lease value "<consumer>/<token>.<seq>" the commit was built under
-- ARGV[2] the lease value the next commit will carry (the lease value is a chain: each
--         commit moves it one step, so a commit can only follow the one it was built after)
-- ARGV[3] the acquisition's prefix "<consumer>/<token>.", which every other lease must hold
-- ARGV[4] envelopes just pushed         ARGV[5] dead letters just pushed
-- ARGV[6] messages inside the envelopes ARGV[7] now, ms since the epoch
-- ARGV[8] the processing list's length limit (REDIS_MAX_PROCESSING_QUEUE_LENGTH; 0: none):
--         checked after the envelopes were pushed, so Redis itself keeps the limit even when
--         several deployments feed one processing list
-- ARGV[9] m, the number of source lists
-- ARGV[10..9+3m] for each source: items to trim from its tail, the fingerprint of the oldest
--         item to trim (the tail) and of the newest (the trim-th from the tail)
-- ARGV[10+3m] n, the number of messages dead-lettered by reference
-- ARGV[11+3m..] for each of them: its source's number (1: the first) and its position in that
--         source, counted from the tail (1: the oldest item trimmed)
--
-- A fingerprint is "<length>:<sha1 hex>" of the item, or of its first and last 1024 bytes
-- when it is longer than 2048 bytes: cheap, and enough to notice that the items at the
-- boundaries of the trim are not the ones the daemon read (a producer that RPUSHes, or an
-- LREM, LSET or second consumer on the source).
--
-- Returns "ok", or the reason nothing happened: "fenced", "processing_not_list",
-- "dead_letter_not_list", "tail_changed:<source list>", "paused" (the processing list would
-- pass its limit), or "check_failed: <what Redis said>".
--
-- Several sources make one commit: every source's trim happens, or none does.
local envelopes = tonumber(ARGV[4])
local dead = tonumber(ARGV[5])
local sources = tonumber(ARGV[9])
local function source_list(i) return KEYS[3 * i + 1] end
local function lease_key(i) return KEYS[3 * i + 2] end
local function legacy_key(i) return KEYS[3 * i + 3] end
local function trim_of(i) return tonumber(ARGV[7 + 3 * i]) end

-- A push that failed (WRONGTYPE) left no list behind; a push that ran left a list. TYPE
-- cannot fail.
local function is_list(key)
  return redis.call('TYPE', key)['ok'] == 'list'
end
local dest_ok = envelopes == 0 or is_list(KEYS[1])
local dead_ok = dead == 0 or is_list(KEYS[2])

local function undo(reason)
  if envelopes > 0 and dest_ok then redis.call('LPOP', KEYS[1], envelopes) end
  if dead > 0 and dead_ok then redis.call('LPOP', KEYS[2], dead) end
  return reason
end

local function fingerprint(item)
  if not item then return 'none' end
  local n = #item
  if n > 2048 then item = string.sub(item, 1, 1024) .. string.sub(item, -1024) end
  return n .. ':' .. redis.sha1hex(item)
end

-- Every check that could raise an error (a key of the wrong type) runs before anything is
-- trimmed, under pcall, so an error undoes the pushes instead of leaving them behind.
local function checks()
  if redis.call('GET', lease_key(1)) ~= ARGV[1] then return 'fenced' end
  local function ours(key)
    local held = redis.call('GET', key)
    return held and string.sub(held, 1, #ARGV[3]) == ARGV[3]
  end
  for i = 1, sources do
    if (i > 1 and not ours(lease_key(i))) or not ours(legacy_key(i)) then return 'fenced' end
  end
  if not dest_ok then return 'processing_not_list' end
  if not dead_ok then return 'dead_letter_not_list' end
  local max_processing = tonumber(ARGV[8])
  if max_processing > 0 and envelopes > 0 and redis.call('LLEN', KEYS[1]) > max_processing then
    return 'paused'
  end
  for i = 1, sources do
    local list, trim = source_list(i), trim_of(i)
    local oldest, newest = ARGV[8 + 3 * i], ARGV[9 + 3 * i]
    if trim > 0 then
      if redis.call('LLEN', list) < trim
        or fingerprint(redis.call('LINDEX', list, -1)) ~= oldest
        or (trim > 1 and fingerprint(redis.call('LINDEX', list, -trim)) ~= newest) then
        return 'tail_changed:' .. list
      end
    end
  end
  return nil
end
local ran, refusal = pcall(checks)
if not ran then return undo('check_failed: ' .. tostring(refusal)) end
if refusal then return undo(refusal) end

-- Messages too large for a dead-letter record move, byte for byte and inside Redis, onto a
-- list of their own before the trim removes them. An error here (out of memory) undoes
-- everything, these lists included.
local by_reference = tonumber(ARGV[10 + 3 * sources])
local moved = {}
local copied, copy_error = pcall(function()
  for j = 1, by_reference do
    local at = 10 + 3 * sources + 2 * (j - 1)
    local list = source_list(tonumber(ARGV[at + 1]))
    local item = redis.call('LINDEX', list, -tonumber(ARGV[at + 2]))
    local key = KEYS[3 + 3 * sources + j]
    redis.call('LPUSH', key, item)
    moved[#moved + 1] = key
  end
end)
if not copied then
  for _, key in ipairs(moved) do redis.call('DEL', key) end
  return undo('check_failed: ' .. tostring(copy_error))
end

-- From here nothing can fail: each source is a list at least its `trim` long and SET
-- replaces any value. The totals are bookkeeping: a broken stats key must not undo a done
-- commit.
for i = 1, sources do
  local trim = trim_of(i)
  if trim > 0 then redis.call('LTRIM', source_list(i), 0, -trim - 1) end
end
redis.call('SET', lease_key(1), ARGV[2], 'KEEPTTL')
pcall(function()
  if envelopes > 0 then
    redis.call('HINCRBY', KEYS[3], 'messages', tonumber(ARGV[6]))
    redis.call('HINCRBY', KEYS[3], 'batches', envelopes)
    redis.call('HSET', KEYS[3], 'last_envelope_at_ms', ARGV[7])
  end
  if dead > 0 then redis.call('HINCRBY', KEYS[3], 'dead_letters', dead) end
end)
return 'ok'
