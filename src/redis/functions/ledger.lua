#!lua name=batch_ledger
-- The transformer's protocol over the batch ledger: claim, heartbeat, ack, and the recovery
-- of dead workers' batches. Loaded with FUNCTION LOAD REPLACE by the daemon (when
-- REDIS_BATCH_LEDGER is on) and by `batch-processor ledger install`; called with FCALL.
--
-- Every function takes the ledger prefix P (REDIS_BATCH_STATE_PREFIX, default
-- "batch:state:") as ARGV[1] and derives the protocol's keys from it:
--   P<event_id>        hash: one batch (status, total, completed, failed, deliveries,
--                      created_at, source, ttl; worker and claimed_at while claimed;
--                      finished_at once finished). Times are ms since the epoch (Redis TIME).
--   P inflight:<worker> list: the envelopes a worker holds, byte for byte (newest at the head)
--   P workers          sorted set: worker -> its last claim or heartbeat (ms)
--   P claims           sorted set: event_id -> claimed_at (ms), every batch being processed
--   P finished         list: ids of the last 1000 batches that finished (newest at the head)
--   P totals           hash: claimed, redelivered, completed, completed_with_failures, dead,
--                      items_completed, items_failed
-- With Redis Cluster, put a {hash tag} in P and in the queue names so all share one slot.
--
-- Envelopes start with {"event_id":"<36-character uuid>" (the daemon's own format), so the id
-- is read at a fixed position without parsing the envelope.

local ID_PREFIX = '{"event_id":"'
local FINISHED_KEEP = 1000
local DEFAULT_TTL = 86400

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(n) return string.format('%.0f', n) end

local function event_id(envelope)
  if string.sub(envelope, 1, 13) ~= ID_PREFIX or string.sub(envelope, 50, 50) ~= '"' then
    return nil
  end
  return string.sub(envelope, 14, 49)
end

-- payload.size, read near the envelope's end: ...],"size":N},"timestamp":"...","service":...}
local function envelope_size(envelope)
  return tonumber(string.match(string.sub(envelope, -160), '"size":(%d+)},"timestamp"')) or 0
end

local function whole(value, name)
  local n = tonumber(value)
  if not n or n < 0 or n ~= math.floor(n) then
    error({err = 'BATCH_ARGS ' .. name .. ' must be a whole number >= 0, got ' .. tostring(value)})
  end
  return n
end

local function need(value, name)
  if not value or value == '' then error({err = 'BATCH_ARGS ' .. name .. ' must not be empty'}) end
  return value
end

local function finish(p, id, key, status, now, ttl)
  redis.call('HSET', key, 'status', status, 'finished_at', int(now))
  redis.call('EXPIRE', key, int(ttl))
  redis.call('ZREM', p .. 'claims', id)
  redis.call('LPUSH', p .. 'finished', id)
  redis.call('LTRIM', p .. 'finished', 0, FINISHED_KEEP - 1)
  redis.call('HINCRBY', p .. 'totals', status, 1)
end

-- batch_claim: take the oldest envelope of the processing queue into the worker's in-flight
-- list and stamp its ledger entry, in one step.
-- KEYS[1] the processing queue.  ARGV[1] P, ARGV[2] the worker's name.
-- Returns nil when the queue is empty, else {envelope, event_id, delivery}: the delivery
-- number fences the ack. An envelope whose entry expired (or was never written) gets a new
-- one; one that finished before (replayed from the dead-letter list) starts counting afresh.
-- Does not block: wait with BLMOVE <queue> <queue> RIGHT RIGHT <timeout>, which moves
-- nothing, and call again.
local function claim(keys, args)
  local p, worker = need(args[1], 'prefix'), need(args[2], 'worker')
  local envelope = redis.call('LMOVE', keys[1], p .. 'inflight:' .. worker, 'RIGHT', 'LEFT')
  if not envelope then return nil end
  local now = now_ms()
  redis.call('ZADD', p .. 'workers', int(now), worker)
  local id = event_id(envelope)
  if not id then return {envelope, '', 0} end
  local key = p .. id
  local h = redis.call('HMGET', key, 'status', 'deliveries', 'ttl')
  local deliveries = tonumber(h[2]) or 0
  local ttl = tonumber(h[3]) or DEFAULT_TTL
  if not h[1] then
    redis.call('HSET', key, 'total', int(envelope_size(envelope)), 'created_at', int(now),
      'source', '', 'ttl', int(ttl))
  elseif h[1] ~= 'queued' and h[1] ~= 'processing' then
    deliveries = 0
    redis.call('HDEL', key, 'finished_at')
  end
  deliveries = deliveries + 1
  redis.call('HSET', key, 'status', 'processing', 'worker', worker, 'claimed_at', int(now),
    'deliveries', int(deliveries), 'completed', '0', 'failed', '0')
  redis.call('EXPIRE', key, int(ttl))
  redis.call('ZADD', p .. 'claims', int(now), id)
  redis.call('HINCRBY', p .. 'totals', 'claimed', 1)
  return {envelope, id, deliveries}
end

-- batch_heartbeat: keep a worker's claims alive during long work.
-- No KEYS.  ARGV[1] P, ARGV[2] the worker's name.
-- Returns how many envelopes the worker still holds: 0 while it believes it holds one means
-- it was presumed dead and its batches went back to the queue (its acks will be refused).
local function heartbeat(keys, args)
  local p, worker = need(args[1], 'prefix'), need(args[2], 'worker')
  redis.call('ZADD', p .. 'workers', int(now_ms()), worker)
  return redis.call('LLEN', p .. 'inflight:' .. worker)
end

-- batch_ack: report items done. Acks add up, so a batch may be acked in parts.
-- No KEYS.  ARGV[1] P, ARGV[2] event_id, ARGV[3] the delivery number from the claim,
-- ARGV[4] items completed, ARGV[5] items failed (both added to the entry's counts).
-- Returns {status, completed, failed, total}. When completed + failed reaches the total the
-- status becomes "completed" (or "completed_with_failures") with finished_at, and the
-- envelope leaves the worker's in-flight list.
-- Errors (nothing changes): "BATCH_UNKNOWN" no entry; "BATCH_STALE" the batch is not being
-- processed under this delivery (it was redelivered, finished, or never claimed);
-- "BATCH_OVER" the counts would pass the total; "BATCH_ARGS" a malformed argument.
local function ack(keys, args)
  local p, id = need(args[1], 'prefix'), need(args[2], 'event_id')
  local delivery = whole(args[3], 'delivery')
  local add_done, add_failed = whole(args[4], 'completed'), whole(args[5], 'failed')
  local key = p .. id
  local h = redis.call('HMGET', key, 'status', 'deliveries', 'total', 'completed', 'failed',
    'worker', 'ttl')
  if not h[1] then return redis.error_reply('BATCH_UNKNOWN no ledger entry for batch ' .. id) end
  if h[1] ~= 'processing' or tonumber(h[2]) ~= delivery then
    return redis.error_reply('BATCH_STALE delivery ' .. int(delivery) .. ' of batch ' .. id ..
      ' is not current (status ' .. h[1] .. ', delivery ' .. tostring(h[2]) .. ')')
  end
  local total = tonumber(h[3]) or 0
  local done = (tonumber(h[4]) or 0) + add_done
  local failed = (tonumber(h[5]) or 0) + add_failed
  if done + failed > total then
    return redis.error_reply('BATCH_OVER batch ' .. id .. ' has ' .. int(total) ..
      ' items; completed ' .. int(done) .. ' + failed ' .. int(failed) .. ' would pass it')
  end
  redis.call('HSET', key, 'completed', int(done), 'failed', int(failed))
  redis.call('HINCRBY', p .. 'totals', 'items_completed', int(add_done))
  redis.call('HINCRBY', p .. 'totals', 'items_failed', int(add_failed))
  local status = 'processing'
  if done + failed == total then
    status = failed == 0 and 'completed' or 'completed_with_failures'
    local inflight = p .. 'inflight:' .. h[6]
    for _, item in ipairs(redis.call('LRANGE', inflight, 0, -1)) do
      if event_id(item) == id then
        redis.call('LREM', inflight, 1, item)
        break
      end
    end
    finish(p, id, key, status, now_ms(), tonumber(h[7]) or DEFAULT_TTL)
  end
  return {status, done, failed, total}
end

-- batch_recover: give back the batches of workers whose last claim or heartbeat is older
-- than the timeout. Each envelope goes back to the processing queue's consuming end (RPUSH),
-- oldest claim last so it is taken first, with its entry set to queued and its counts reset;
-- one already delivered ARGV[3] times goes to the dead-letter list instead, byte for byte in
-- a dead-letter record, and its entry becomes dead. Envelopes without an entry are requeued.
-- KEYS[1] the processing queue, KEYS[2] the dead-letter list.
-- ARGV[1] P, ARGV[2] the timeout in ms, ARGV[3] REDIS_MAX_DELIVERIES, ARGV[4] failed_at for
-- the records (RFC 3339), ARGV[5] most workers handled in one call.
-- Returns {requeued, dead, workers removed}.
local function recover(keys, args)
  local p = need(args[1], 'prefix')
  local timeout, max_deliveries = whole(args[2], 'timeout'), whole(args[3], 'max_deliveries')
  local limit = whole(args[5], 'limit')
  local now = now_ms()
  local stale = redis.call('ZRANGEBYSCORE', p .. 'workers', '-inf', '(' .. int(now - timeout),
    'LIMIT', 0, limit)
  local requeued, dead = 0, 0
  for _, worker in ipairs(stale) do
    local inflight = p .. 'inflight:' .. worker
    while true do
      local envelope = redis.call('LPOP', inflight)
      if not envelope then break end
      local id = event_id(envelope)
      local key = id and (p .. id)
      local h = key and redis.call('HMGET', key, 'deliveries', 'ttl') or {}
      local deliveries = tonumber(h[1]) or 0
      local ttl = tonumber(h[2]) or DEFAULT_TTL
      if id and h[1] and deliveries >= max_deliveries then
        local reason = 'batch delivered ' .. int(deliveries) ..
          ' times without completion (REDIS_MAX_DELIVERIES ' .. int(max_deliveries) .. ')'
        redis.call('LPUSH', keys[2], '{"reason":' .. cjson.encode(reason) .. ',"raw":' ..
          cjson.encode(envelope) .. ',"source_queue":' .. cjson.encode(keys[1]) ..
          ',"failed_at":' .. cjson.encode(args[4]) .. '}')
        finish(p, id, key, 'dead', now, ttl)
        dead = dead + 1
      else
        redis.call('RPUSH', keys[1], envelope)
        if id then
          redis.call('ZREM', p .. 'claims', id)
          if h[1] then
            redis.call('HSET', key, 'status', 'queued', 'completed', '0', 'failed', '0')
            redis.call('HDEL', key, 'worker', 'claimed_at')
            redis.call('EXPIRE', key, int(ttl))
          end
        end
        redis.call('HINCRBY', p .. 'totals', 'redelivered', 1)
        requeued = requeued + 1
      end
    end
    redis.call('ZREM', p .. 'workers', worker)
  end
  return {requeued, dead, #stale}
end

redis.register_function('batch_claim', claim)
redis.register_function('batch_heartbeat', heartbeat)
redis.register_function('batch_ack', ack)
redis.register_function('batch_recover', recover)
