"""The Redis backend's Lua scripts, kept together as reviewed data.

Each script is one decision and so one round trip. None reads Redis's clock:
``now`` arrives as an argument, so every instance and every test agrees on the
arithmetic. Floats travel as Python ``repr`` strings (shortest round-trip form,
parsed exactly by ``tonumber``) and come back as ``%.17g`` strings, because
Redis truncates Lua numbers to integers in replies.
"""

from __future__ import annotations

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
