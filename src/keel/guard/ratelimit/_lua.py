"""The Redis backend's Lua scripts, kept together as reviewed data.

Each script is one decision and so one round trip; :data:`ADMIT` is a whole
request's decision (every rate limit, quota and slot it passes). None reads Redis's clock:
``now`` arrives as an argument, so every instance and every test agrees on the
arithmetic. Floats travel as Python ``repr`` strings (shortest round-trip form,
parsed exactly by ``tonumber``) and come back as ``%.17g`` strings, because
Redis truncates Lua numbers to integers in replies.
"""

from __future__ import annotations

ADMIT = """
-- One request's admission, all or nothing: every check is read first, and
-- only if all pass are cells spent, quota units reserved and slots taken.
-- KEYS: rate TAT keys, then quota counter keys, then slot sets.
-- ARGV: now, n, #rates, #quotas (the slots are the keys left), then per
--   rate: emission interval, tolerance; per quota: limit, ms to the window's
--   end; per slot: limit, lease expiry, slot id.
-- Reply: {admitted, stored TAT or false per rate, count before this request
--   per quota,
--   live leases and '%.17g' wait to the earliest expiry per slot}. Python
--   derives every reading from these with the same code the memory backend
--   uses, so the GCRA arithmetic below mirrors keel.guard.ratelimit.gcra.
-- Written for the per-request path: comparisons where math.min/max would be
-- calls, and one table of pending TATs, filled only when there is one to write.
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local nr, nq = tonumber(ARGV[3]), tonumber(ARGV[4])
local ns = #KEYS - nr - nq
local ok = 1
local reply = {0}
-- The TAT to store per rate: the new one (written if admitted), or the one
-- a backwards clock clamped (written if refused); false when there is none.
local fresh, clamped = {}, {}
local a = 5
for i = 1, nr do
  local interval, tolerance = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local raw = redis.call('GET', KEYS[i])
  -- base = min(max(stored, now), now + tolerance), as gcra() computes it.
  local base = now
  if raw then
    local stored = tonumber(raw)
    if stored > now then
      base = stored
    end
    if base > now + tolerance then
      base = now + tolerance
      clamped[i] = base  -- below the stored TAT: only a backwards clock does that
    end
  end
  local tat = base + n * interval
  fresh[i] = tat
  if tat - tolerance - now > 1e-06 then
    ok = 0
  end
  reply[i + 1] = raw or false
end
local q = a  -- where the quotas' arguments start
for i = 1, nq do
  local used = tonumber(redis.call('GET', KEYS[nr + i]) or '0')
  if used + n > tonumber(ARGV[a]) then
    ok = 0
  end
  a = a + 2
  reply[nr + i + 1] = used
end
for i = 1, ns do
  local key = KEYS[nr + nq + i]
  -- Expired leases go first: that is how a crashed holder's slot returns.
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local count = redis.call('ZCARD', key)
  local wait = '0'
  if count >= tonumber(ARGV[a + 3 * (i - 1)]) then
    ok = 0
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    wait = string.format('%.17g', tonumber(first[2]) - now)
  end
  reply[nr + nq + 2 * i] = count
  reply[nr + nq + 2 * i + 1] = wait
end
reply[1] = ok
if ok == 1 then
  if n > 0 then
    for i = 1, nr do
      -- The key means nothing once its TAT has passed, so that is its TTL,
      -- padded to a second for instances whose clocks differ a little.
      local ttl = math.ceil((fresh[i] - now) * 1000)
      if ttl < 1000 then
        ttl = 1000
      end
      redis.call('SET', KEYS[i], string.format('%.17g', fresh[i]), 'PX', ttl)
    end
    -- The reservation: counted now, in the same atomic step as the check, so
    -- concurrent requests (on any instance) can never pass the limit together.
    -- A failed request gives its unit back (QUOTA_REFUND). The counter lives
    -- until its window ends.
    for i = 1, nq do
      redis.call('INCRBY', KEYS[nr + i], n)
      redis.call('PEXPIRE', KEYS[nr + i], ARGV[q + 2 * (i - 1) + 1])
    end
  end
  for i = 1, ns do
    local key = KEYS[nr + nq + i]
    local s = a + 3 * (i - 1)
    redis.call('ZADD', key, ARGV[s + 1], ARGV[s + 2])
    -- The set lives as long as its longest lease.
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    redis.call('PEXPIRE', key, math.max(1, math.ceil((tonumber(last[2]) - now) * 1000)))
  end
else
  for i = 1, nr do
    local base = clamped[i]
    if base then
      -- A clock that went backwards: keep the clamped TAT so the key recovers.
      local ttl = math.ceil((base - now) * 1000)
      if ttl < 1000 then
        ttl = 1000
      end
      redis.call('SET', KEYS[i], string.format('%.17g', base), 'PX', ttl)
    end
  end
end
return reply
"""

GCRA = """
-- KEYS[1]: the key's TAT. ARGV: now, emission interval, tolerance, n, epsilon.
-- Mirrors keel.guard.ratelimit.gcra.gcra operation for operation so both
-- backends round identically; returns {allowed, stored TAT or false} and the
-- caller derives remaining/reset/retry from the stored TAT with the same code.
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local epsilon = tonumber(ARGV[5])
-- The key means nothing once its TAT has passed, so that is its TTL, padded
-- to a second so instances whose clocks differ a little still share it.
local function store(tat, now)
  local ttl = math.max(1000, math.ceil((tat - now) * 1000))
  redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX', ttl)
end
local stored = redis.call('GET', KEYS[1])
local base = now
if stored then
  base = math.min(math.max(tonumber(stored), now), now + tolerance)
end
local new_tat = base + n * interval
if new_tat - tolerance - now > epsilon then
  if stored and base < tonumber(stored) then
    -- A clock that went backwards: keep the clamped TAT so the key recovers.
    store(base, now)
  end
  return {0, stored}
end
if n > 0 then
  store(new_tat, now)
end
return {1, stored}
"""

QUOTA_CONSUME = """
-- KEYS[1]: one window's counter. ARGV: limit, n, ttl ms, overdraft (0/1).
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[2])
if used + n > tonumber(ARGV[1]) and ARGV[4] == '0' then
  return {0, used}
end
used = redis.call('INCRBY', KEYS[1], n)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, used}
"""

QUOTA_REFUND = """
-- KEYS[1]: one window's counter. ARGV: n. A missing counter stays missing.
local used = redis.call('GET', KEYS[1])
if not used then
  return 0
end
local left = math.max(0, tonumber(used) - tonumber(ARGV[1]))
redis.call('SET', KEYS[1], left, 'KEEPTTL')
return left
"""

SLOT_ACQUIRE = """
-- KEYS[1]: sorted set of slot ids scored by lease expiry.
-- ARGV: now, limit, lease expiry, slot id.
-- Expired leases are dropped first: that is how a crashed holder's slot returns.
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[2]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, count, string.format('%.17g', tonumber(first[2]) - now)}
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
-- The set lives as long as its longest lease.
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((tonumber(last[2]) - now) * 1000)))
return {1, count + 1, '0'}
"""
