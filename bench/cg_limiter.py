"""Instructions (or CPU) per rate-limit check of a record GET (the caller's bucket, then the store's record
bucket) with the records bench's limits of 1e9 a second, with a full bucket kept KEEP seconds (0: dropped as soon
as it is full, as before issue 12's `tidy`). Arguments: N KEEP. Per call: (count at N=200000 - at N=100000) / 100000.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python bench/cg_limiter.py 200000 0.5
"""
import sys
import time

import openkvs.ratelimit.memory as memory
from openkvs.ratelimit.memory import MemoryLimiter
from openkvs.ratelimit.policy import RateLimitPolicy

n, keep, high = int(sys.argv[1]), float(sys.argv[2]), 1e9
memory.KEEP_FULL_SECONDS = keep
limiter = MemoryLimiter()
policy = RateLimitPolicy(limiter, int(high * 60), int(high), int(high))
check = policy.check_now
t0 = time.process_time()
for _ in range(n):
    check("ip:127.0.0.1", "STOREID", True)
t = time.process_time() - t0
print(f"{n} checks, keep {keep}: {t / max(n, 1) * 1e6:.3f} us CPU each, {len(limiter)} buckets")
