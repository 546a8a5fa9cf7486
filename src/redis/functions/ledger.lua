#!lua name=batch_ledger
-- The transformer's protocol over the batch ledger: claim, heartbeat, ack, and the recovery
-- of dead workers' batches. Loaded with FUNCTION LOAD REPLACE by the daemon (when
-- REDIS_BATCH_LEDGER is on) and by `batch-processor ledger install`; called with FCALL.
--
-- Every function takes the ledger prefix P (REDIS_BATCH_STATE_PREFIX, default
-- "batch:state:") as ARGV[1] and derives the protocol's keys from it (batch_ack also
-- declares its batch's two keys in KEYS, checked against the derived names):
--   P<event_id>        hash: one batch (status, total, completed, failed, deliveries,
--                      created_at, source, ttl; delivery once claimed; worker, instance and
--                      claimed_at while claimed; finished_at once finished). Times are ms
--                      since the epoch (Redis TIME). No expiry while processing.
--   P<event_id>:acks   hash: the ack ids applied to that batch, with their answers; expires
--                      with the entry (no expiry while processing)
--   P inflight:<worker> list: the envelopes a worker holds, byte for byte (newest at the head)
--   P workers          sorted set: worker -> its last claim or heartbeat (ms)
--   P claims           sorted set: event_id -> claimed_at (ms), every batch being processed
--   P finished         list: ids of the last 1000 batches that finished (newest at the head)
--   P totals           hash: claimed, redelivered, completed, completed_with_failures, dead,
--                      items_completed, items_failed
--   P delivery_seq     string: the last delivery number handed out, for every batch (INCR);
--                      never expires, so no delivery number is ever handed out twice
--   P sweep            string: where the next sweep of live workers' lists starts
-- With Redis Cluster, put a {hash tag} in P and in the queue names so all share one slot.
--
-- Functions are atomic but not transactional: a write made before an error stays. So each
-- function checks the type of every key it may write, and reads everything it decides on,
-- before its first write; after that nothing can fail (Redis refuses a writing function under
-- maxmemory before it starts). A refusal therefore always means nothing changed.
--
-- Envelopes start with {"event_id":"<36-character uuid>" (the daemon's own format), so the id
-- is read at a fixed position without parsing the envelope.

local ID_PREFIX = '{"event_id":"'
local FINISHED_KEEP = 1000
local DEFAULT_TTL = 86400
local MAX_ACK_ID = 128

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

-- A batch's applied ack ids: ack id -> "<delivery> <completed> <failed>" as asked, then
-- "<status> <completed> <failed> <total>" as answered. It lives and expires with the entry.
local function acks_key(p, id) return p .. id .. ':acks' end

local FINISHED = {completed = true, completed_with_failures = true, dead = true}
-- The protocol's keys under P that several functions write, with their types.
local PROTOCOL_KEYS = {{'workers', 'zset'}, {'claims', 'zset'}, {'finished', 'list'},
  {'totals', 'hash'}, {'delivery_seq', 'string'}, {'sweep', 'string'}}

-- Refuse (before any write) when `key` exists with another type than `want`.
local function check_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    error({err = 'BATCH_WRONGTYPE ' .. key .. ' is a ' .. t .. ', expected a ' .. want})
  end
end

local function check_protocol_keys(p)
  for _, k in ipairs(PROTOCOL_KEYS) do check_type(p .. k[1], k[2]) end
end

-- Expire the entry and its ack ids together, `ttl` seconds from now.
local function arm(p, id, ttl)
  redis.call('EXPIRE', p .. id, int(ttl))
  redis.call('EXPIRE', acks_key(p, id), int(ttl))
end

local function finish(p, id, key, status, now, ttl)
  redis.call('HSET', key, 'status', status, 'finished_at', int(now))
  arm(p, id, ttl)
  redis.call('ZREM', p .. 'claims', id)
  redis.call('LPUSH', p .. 'finished', id)
  redis.call('LTRIM', p .. 'finished', 0, FINISHED_KEEP - 1)
  redis.call('HINCRBY', p .. 'totals', status, 1)
end

-- An entry for an envelope that has none (it expired while queued, or was never written):
-- what the commit would have written, from the envelope itself.
local function new_entry(key, envelope, now, deliveries)
  redis.call('HSET', key, 'status', 'queued', 'total', int(envelope_size(envelope)),
    'completed', '0', 'failed', '0', 'deliveries', int(deliveries), 'created_at', int(now),
    'source', '', 'ttl', int(DEFAULT_TTL))
end

-- batch_claim: take the oldest envelope of the processing queue into the worker's in-flight
-- list and stamp its ledger entry, in one step.
-- KEYS[1] the processing queue.  ARGV[1] P, ARGV[2] the worker's name, ARGV[3] (optional)
-- the worker's instance token, kept in the entry so a worker can tell its own claims from
-- those of another process that took the same name.
-- Returns nil when the queue is empty, else {envelope, event_id, delivery}. The delivery
-- number fences the ack: it comes from P delivery_seq, so it is never handed out twice, not
-- even for a batch replayed from the dead-letter list or whose entry expired and was made
-- anew. `deliveries` counts claims for REDIS_MAX_DELIVERIES; it starts again from 1 for a
-- batch that finished before (replayed from the dead-letter list) or had no entry.
-- The entry and its ack ids do not expire while processing (PERSIST); finishing or
-- requeueing re-arms them.
-- Does not block: wait with BLMOVE <queue> <queue> RIGHT RIGHT <timeout>, which moves
-- nothing, and call again.
local function claim(keys, args)
  local p, worker = need(args[1], 'prefix'), need(args[2], 'worker')
  local inflight = p .. 'inflight:' .. worker
  check_type(keys[1], 'list')
  check_type(inflight, 'list')
  check_protocol_keys(p)
  local envelope = redis.call('LINDEX', keys[1], -1)
  if not envelope then return nil end
  local id = event_id(envelope)
  if id then check_type(p .. id, 'hash') end
  -- Checked: nothing below can fail.
  redis.call('LMOVE', keys[1], inflight, 'RIGHT', 'LEFT')
  local now = now_ms()
  redis.call('ZADD', p .. 'workers', int(now), worker)
  if not id then return {envelope, '', 0} end
  local key = p .. id
  local h = redis.call('HMGET', key, 'status', 'deliveries')
  local deliveries = tonumber(h[2]) or 0
  if not h[1] then
    new_entry(key, envelope, now, 0)
  elseif FINISHED[h[1]] then
    deliveries = 0
    redis.call('HDEL', key, 'finished_at')
  end
  local delivery = redis.call('INCR', p .. 'delivery_seq')
  redis.call('HSET', key, 'status', 'processing', 'worker', worker, 'instance', args[3] or '',
    'claimed_at', int(now), 'deliveries', int(deliveries + 1), 'delivery', int(delivery),
    'completed', '0', 'failed', '0')
  redis.call('PERSIST', key)
  redis.call('PERSIST', acks_key(p, id))
  redis.call('ZADD', p .. 'claims', int(now), id)
  redis.call('HINCRBY', p .. 'totals', 'claimed', 1)
  return {envelope, id, delivery}
end

-- batch_heartbeat: keep a worker's claims alive during long work.
-- No KEYS.  ARGV[1] P, ARGV[2] the worker's name.
-- Returns how many envelopes the worker still holds: 0 while it believes it holds one means
-- it was presumed dead and its batches went back to the queue (its acks will be refused).
local function heartbeat(keys, args)
  local p, worker = need(args[1], 'prefix'), need(args[2], 'worker')
  check_type(p .. 'workers', 'zset')
  check_type(p .. 'inflight:' .. worker, 'list')
  redis.call('ZADD', p .. 'workers', int(now_ms()), worker)
  return redis.call('LLEN', p .. 'inflight:' .. worker)
end

local function refuse(code, text) return redis.error_reply(code .. ' ' .. text) end

-- The answer an applied ack id got, if `request` is the ack it was applied to.
local function replay(seen, request, ack_id)
  local f = {}
  for word in string.gmatch(seen, '%S+') do f[#f + 1] = word end
  if f[1] .. ' ' .. f[2] .. ' ' .. f[3] ~= request then
    return refuse('BATCH_ARGS', 'ack id ' .. ack_id .. ' was applied to another ack (delivery, ' ..
      'completed, failed: ' .. f[1] .. ', ' .. f[2] .. ', ' .. f[3] .. '); use a new id per ack')
  end
  return {f[4], tonumber(f[5]), tonumber(f[6]), tonumber(f[7])}
end

-- batch_ack: add a delivery's newly finished items to the batch's counts, once per ack id.
-- KEYS[1] the entry P<event_id>, KEYS[2] its ack ids P<event_id>:acks (declared so a
-- caller and Redis Cluster see the batch's keys; they must be the names derived from P).
-- ARGV[1] P, ARGV[2] event_id, ARGV[3] the delivery number from the claim, ARGV[4] items
-- newly completed, ARGV[5] items newly failed (increments, so several reporters add up),
-- ARGV[6] the ack id: chosen by the caller (a UUID), new for each ack and the same when that
-- ack is retried, at most 128 bytes.
-- Returns {status, completed, failed, total}: the counts after this ack. When completed +
-- failed reaches the total the status becomes "completed" (or "completed_with_failures")
-- with finished_at, and the envelope leaves the worker's in-flight list. An ack id already
-- applied to this batch returns the answer it got then and adds nothing (whatever happened
-- to the batch since); an ack adding nothing is answered without being recorded.
-- Errors (nothing changes): "BATCH_UNKNOWN" no entry; "BATCH_STALE" the batch is not being
-- processed under this delivery (it was redelivered, finished, or never claimed);
-- "BATCH_OVER" the counts would pass the batch's total; "BATCH_ARGS" a malformed argument,
-- or an ack id reused for a different ack; "BATCH_WRONGTYPE" a protocol key holds another
-- type.
local function ack(keys, args)
  local p, id = need(args[1], 'prefix'), need(args[2], 'event_id')
  local delivery = whole(args[3], 'delivery')
  local add_done, add_failed = whole(args[4], 'completed'), whole(args[5], 'failed')
  local ack_id = need(args[6], 'ack_id')
  if #ack_id > MAX_ACK_ID then
    error({err = 'BATCH_ARGS ack_id must be at most ' .. MAX_ACK_ID .. ' bytes'})
  end
  local key, acks = p .. id, acks_key(p, id)
  if keys[1] ~= key or keys[2] ~= acks then
    error({err = 'BATCH_ARGS the keys must be ' .. key .. ' and ' .. acks})
  end
  check_type(key, 'hash')
  check_type(acks, 'hash')
  check_protocol_keys(p)
  local request = int(delivery) .. ' ' .. int(add_done) .. ' ' .. int(add_failed)
  local seen = redis.call('HGET', acks, ack_id)
  if seen then return replay(seen, request, ack_id) end
  local h = redis.call('HMGET', key, 'status', 'delivery', 'total', 'completed', 'failed',
    'worker', 'ttl')
  if not h[1] then return refuse('BATCH_UNKNOWN', 'no ledger entry for batch ' .. id) end
  if h[1] ~= 'processing' or tonumber(h[2]) ~= delivery then
    return refuse('BATCH_STALE', 'delivery ' .. int(delivery) .. ' of batch ' .. id ..
      ' is not current (status ' .. h[1] .. ', delivery ' .. tostring(h[2]) .. ')')
  end
  local total, was_done, was_failed = tonumber(h[3]) or 0, tonumber(h[4]) or 0, tonumber(h[5]) or 0
  local done, failed = was_done + add_done, was_failed + add_failed
  if done + failed > total then
    return refuse('BATCH_OVER', 'batch ' .. id .. ' has ' .. int(total) .. ' items; completed ' ..
      int(was_done) .. ' + failed ' .. int(was_failed) .. ' so far, adding ' .. int(add_done) ..
      ' + ' .. int(add_failed) .. ' would pass it')
  end
  local inflight = p .. 'inflight:' .. (h[6] or '')
  check_type(inflight, 'list')
  if done + failed < total and add_done + add_failed == 0 then
    return {'processing', done, failed, total}
  end
  -- Checked: nothing below can fail.
  redis.call('HSET', key, 'completed', int(done), 'failed', int(failed))
  redis.call('HINCRBY', p .. 'totals', 'items_completed', int(add_done))
  redis.call('HINCRBY', p .. 'totals', 'items_failed', int(add_failed))
  local status = 'processing'
  if done + failed >= total then
    status = failed == 0 and 'completed' or 'completed_with_failures'
    for _, item in ipairs(redis.call('LRANGE', inflight, 0, -1)) do
      if event_id(item) == id then
        redis.call('LREM', inflight, 1, item)
        break
      end
    end
  end
  redis.call('HSET', acks, ack_id, request .. ' ' .. status .. ' ' .. int(done) .. ' ' ..
    int(failed) .. ' ' .. int(total))
  if status ~= 'processing' then
    finish(p, id, key, status, now_ms(), tonumber(h[7]) or DEFAULT_TTL)
  end
  return {status, done, failed, total}
end

-- Put one in-flight envelope back at the processing queue's consuming end, its entry queued
-- with counts reset (made anew from the envelope if it has none), re-armed to expire.
local function requeue(p, queue, envelope, id)
  redis.call('RPUSH', queue, envelope)
  if id then
    local key = p .. id
    redis.call('ZREM', p .. 'claims', id)
    local ttl = tonumber(redis.call('HGET', key, 'ttl')) or DEFAULT_TTL
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'status', 'queued', 'completed', '0', 'failed', '0')
      redis.call('HDEL', key, 'worker', 'instance', 'claimed_at')
    else
      new_entry(key, envelope, now_ms(), 1)
    end
    arm(p, id, ttl)
  end
  redis.call('HINCRBY', p .. 'totals', 'redelivered', 1)
end

-- Dead-letter one in-flight envelope, byte for byte in a record, its entry dead.
local function bury(p, keys, envelope, id, deliveries, ctx)
  local reason = 'batch delivered ' .. int(deliveries) ..
    ' times without completion (REDIS_MAX_DELIVERIES ' .. int(ctx.max) .. ')'
  redis.call('LPUSH', keys[2], '{"reason":' .. cjson.encode(reason) .. ',"raw":' ..
    cjson.encode(envelope) .. ',"source_queue":' .. cjson.encode(keys[1]) ..
    ',"failed_at":' .. cjson.encode(ctx.failed_at) .. '}')
  local ttl = tonumber(redis.call('HGET', p .. id, 'ttl')) or DEFAULT_TTL
  finish(p, id, p .. id, 'dead', ctx.now, ttl)
end

-- The envelopes of one worker's in-flight list with their ids, every entry's type checked.
local function read_inflight(p, worker)
  local inflight = p .. 'inflight:' .. worker
  check_type(inflight, 'list')
  local items = {}
  for _, envelope in ipairs(redis.call('LRANGE', inflight, 0, -1)) do
    local id = event_id(envelope)
    if id then check_type(p .. id, 'hash') end
    items[#items + 1] = {envelope = envelope, id = id}
  end
  return inflight, items
end

-- Live workers whose lists to sweep this call: `limit` of them, round robin over calls.
local function sweep_workers(p, cutoff, limit)
  local start = tonumber(redis.call('GET', p .. 'sweep')) or 0
  local live = redis.call('ZRANGEBYSCORE', p .. 'workers', cutoff, '+inf', 'LIMIT', start, limit)
  local next_start = #live < limit and 0 or start + #live
  return live, start, next_start
end

-- batch_recover: give back the batches of workers whose last claim or heartbeat is older
-- than the timeout. Each envelope goes back to the processing queue's consuming end (RPUSH),
-- oldest claim last so it is taken first, with its entry set to queued and its counts reset;
-- one already delivered ARGV[3] times goes to the dead-letter list instead, byte for byte in
-- a dead-letter record, and its entry becomes dead. It also sweeps up to ARGV[5] live
-- workers' lists (round robin over calls) for envelopes whose entry is missing (deleted,
-- evicted, or expired under an earlier version): no ack could ever remove those, so they are
-- requeued too. Requeued envelopes without an entry get one made from the envelope.
-- KEYS[1] the processing queue, KEYS[2] the dead-letter list (a different list).
-- ARGV[1] P, ARGV[2] the timeout in ms, ARGV[3] REDIS_MAX_DELIVERIES, ARGV[4] failed_at for
-- the records (RFC 3339), ARGV[5] most workers handled in one call (and swept).
-- Returns {requeued, dead, workers removed}.
local function recover(keys, args)
  local p = need(args[1], 'prefix')
  local timeout, max_deliveries = whole(args[2], 'timeout'), whole(args[3], 'max_deliveries')
  local limit = whole(args[5], 'limit')
  if keys[1] == keys[2] then
    error({err = 'BATCH_ARGS the dead-letter list must not be the processing queue'})
  end
  check_type(keys[1], 'list')
  check_type(keys[2], 'list')
  check_protocol_keys(p)
  local now = now_ms()
  local cutoff = now - timeout
  local stale = redis.call('ZRANGEBYSCORE', p .. 'workers', '-inf', '(' .. int(cutoff),
    'LIMIT', 0, limit)
  local live, sweep_from, next_sweep = sweep_workers(p, int(cutoff), limit)
  -- Read and check everything first.
  local plan = {}
  for _, worker in ipairs(stale) do
    local inflight, items = read_inflight(p, worker)
    plan[#plan + 1] = {worker = worker, inflight = inflight, items = items, dead = true}
  end
  for _, worker in ipairs(live) do
    local inflight, items = read_inflight(p, worker)
    plan[#plan + 1] = {worker = worker, inflight = inflight, items = items, dead = false}
  end
  -- Checked: nothing below can fail.
  local ctx = {max = max_deliveries, failed_at = args[4], now = now}
  local requeued, dead = 0, 0
  for _, w in ipairs(plan) do
    for _, item in ipairs(w.items) do
      local known = item.id and redis.call('EXISTS', p .. item.id) == 1
      local deliveries = known and tonumber(redis.call('HGET', p .. item.id, 'deliveries')) or 0
      if w.dead and known and deliveries >= max_deliveries then
        bury(p, keys, item.envelope, item.id, deliveries, ctx)
        dead = dead + 1
      elseif w.dead or (item.id and not known) then
        requeue(p, keys[1], item.envelope, item.id)
        if not w.dead then redis.call('LREM', w.inflight, 1, item.envelope) end
        requeued = requeued + 1
      end
    end
    if w.dead then
      redis.call('DEL', w.inflight)
      redis.call('ZREM', p .. 'workers', w.worker)
    end
  end
  if next_sweep ~= sweep_from then redis.call('SET', p .. 'sweep', int(next_sweep)) end
  return {requeued, dead, #stale}
end

redis.register_function('batch_claim', claim)
redis.register_function('batch_heartbeat', heartbeat)
redis.register_function('batch_ack', ack)
redis.register_function('batch_recover', recover)
