-- Write the ledger entries of a commit's envelopes. Runs inside the commit's MULTI/EXEC right
-- after commit.lua, and writes only if that script let the commit through: commit.lua moves
-- the lease to the next value of its chain on success and leaves it alone when it refuses
-- (and undoes the pushes), and that value is unique to this commit. So an entry never exists
-- without its envelope, nor an envelope (with the ledger on) without its entry.
--
-- KEYS[1] the source lease string    KEYS[2..n+1] the ledger hash of each envelope pushed
-- ARGV[1] the lease value a successful commit leaves (commit.lua's ARGV[7])
-- ARGV[2] the entries' TTL in seconds   ARGV[3] created_at, ms since the epoch
-- ARGV[2+2i] the number of messages in envelope i
-- ARGV[3+2i] the source list(s) its messages came from, joined with "," in priority order
--
-- Returns the number of entries written (0 when the commit was refused).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 2, #KEYS do
  local n = i - 1
  redis.call('HSET', KEYS[i], 'status', 'queued', 'total', ARGV[2 + 2 * n], 'completed', '0',
    'failed', '0', 'deliveries', '0', 'created_at', ARGV[3], 'source', ARGV[3 + 2 * n],
    'ttl', ARGV[2])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return #KEYS - 1
