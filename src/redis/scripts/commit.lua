-- Finish a commit. Runs inside MULTI/EXEC right after the LPUSHes of the envelopes and dead
-- letters, so nothing can interleave: either the source is trimmed and the pushes stay, or
-- the pushes are undone and the source is untouched.
--
-- KEYS[1] source list          KEYS[2] processing list    KEYS[3] dead-letter list
-- KEYS[4] source lease string  KEYS[5] stats hash          KEYS[6] legacy lease string
-- KEYS[7..6+n] the lists that receive the messages dead-lettered by reference, one each
-- ARGV[1] lease value "<consumer>/<token>.<seq>" the commit was built under
-- ARGV[2] items to trim from the source's tail
-- ARGV[3] envelopes just pushed         ARGV[4] dead letters just pushed
-- ARGV[5] messages inside the envelopes ARGV[6] now, ms since the epoch
-- ARGV[7] the lease value the next commit will carry (the lease value is a chain: each
--         commit moves it one step, so a commit can only follow the one it was built after)
-- ARGV[8] the acquisition's prefix "<consumer>/<token>.", which the legacy lease must hold
-- ARGV[9] fingerprint of the oldest item to trim (the tail)
-- ARGV[10] fingerprint of the newest item to trim (the trim-th from the tail)
-- ARGV[11] n, the number of messages dead-lettered by reference
-- ARGV[12..11+n] the position of each, counted from the tail (1: the oldest item trimmed)
-- ARGV[12+n] the processing list's length limit (REDIS_MAX_PROCESSING_QUEUE_LENGTH; 0: none):
--          checked after the envelopes were pushed, so Redis itself keeps the limit even when
--          several deployments feed one processing list
--
-- A fingerprint is "<length>:<sha1 hex>" of the item, or of its first and last 1024 bytes
-- when it is longer than 2048 bytes: cheap, and enough to notice that the items at the
-- boundaries of the trim are not the ones the daemon read (a producer that RPUSHes, or an
-- LREM, LSET or second consumer on the source).
--
-- Returns "ok", or the reason nothing happened: "fenced", "processing_not_list",
-- "dead_letter_not_list", "tail_changed", "paused" (the processing list would pass its
-- limit), or "check_failed: <what Redis said>".
local trim = tonumber(ARGV[2])
local envelopes = tonumber(ARGV[3])
local dead = tonumber(ARGV[4])

-- A push that failed (WRONGTYPE) left no list behind; a push that ran left a list. TYPE
-- cannot fail.
local function is_list(key)
  return redis.call('TYPE', key)['ok'] == 'list'
end
local dest_ok = envelopes == 0 or is_list(KEYS[2])
local dead_ok = dead == 0 or is_list(KEYS[3])

local function undo(reason)
  if envelopes > 0 and dest_ok then redis.call('LPOP', KEYS[2], envelopes) end
  if dead > 0 and dead_ok then redis.call('LPOP', KEYS[3], dead) end
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
  if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 'fenced' end
  local legacy = redis.call('GET', KEYS[6])
  if not legacy or string.sub(legacy, 1, #ARGV[8]) ~= ARGV[8] then return 'fenced' end
  if not dest_ok then return 'processing_not_list' end
  if not dead_ok then return 'dead_letter_not_list' end
  local max_processing = tonumber(ARGV[#ARGV])
  if max_processing > 0 and envelopes > 0 and redis.call('LLEN', KEYS[2]) > max_processing then
    return 'paused'
  end
  if redis.call('LLEN', KEYS[1]) < trim then return 'tail_changed' end
  if fingerprint(redis.call('LINDEX', KEYS[1], -1)) ~= ARGV[9] then return 'tail_changed' end
  if trim > 1 and fingerprint(redis.call('LINDEX', KEYS[1], -trim)) ~= ARGV[10] then
    return 'tail_changed'
  end
  return nil
end
local ran, refusal = pcall(checks)
if not ran then return undo('check_failed: ' .. tostring(refusal)) end
if refusal then return undo(refusal) end

-- Messages too large for a dead-letter record move, byte for byte and inside Redis, onto a
-- list of their own before the trim removes them. An error here (out of memory) undoes
-- everything, these lists included.
local by_reference = tonumber(ARGV[11])
local moved = {}
local copied, copy_error = pcall(function()
  for j = 1, by_reference do
    local item = redis.call('LINDEX', KEYS[1], -tonumber(ARGV[11 + j]))
    redis.call('LPUSH', KEYS[6 + j], item)
    moved[#moved + 1] = KEYS[6 + j]
  end
end)
if not copied then
  for _, key in ipairs(moved) do redis.call('DEL', key) end
  return undo('check_failed: ' .. tostring(copy_error))
end

-- From here nothing can fail: the source is a list at least `trim` long and SET replaces any
-- value. The totals are bookkeeping: a broken stats key must not undo a done commit.
redis.call('LTRIM', KEYS[1], 0, -trim - 1)
redis.call('SET', KEYS[4], ARGV[7], 'KEEPTTL')
pcall(function()
  if envelopes > 0 then
    redis.call('HINCRBY', KEYS[5], 'messages', tonumber(ARGV[5]))
    redis.call('HINCRBY', KEYS[5], 'batches', envelopes)
    redis.call('HSET', KEYS[5], 'last_envelope_at_ms', ARGV[6])
  end
  if dead > 0 then redis.call('HINCRBY', KEYS[5], 'dead_letters', dead) end
end)
return 'ok'
