"""Diagnoses of the memory failures operators of inference engines report again and
again (issue 14), each from evidence memgap reads: engine logs, host meminfo and the
kernel's reserve, cgroup counters, the processes holding memory, and NVML.

The rules are pure functions of that evidence (:mod:`.refusal`, :mod:`.limits`,
:mod:`.shm`, :mod:`.pagecache`, :mod:`.reserve`, :mod:`.gpu_source`, :mod:`.maxlen`); the thin readers
take an injected ``proc_root`` (:mod:`.holders`, :mod:`.reserve`). Four places call in,
each through one line: a failed run's cause (:mod:`.run`), ``memgap probe`` and
``memgap doctor`` before a run (:mod:`.machine`), and ``explain`` after two runs
(:mod:`.explain`). Nothing here imports the runner, the environments or the engines'
launch code, so the analysis layer may use it.

The cases (README, "What memgap checks"):

1. an engine refuses to start because other processes hold the memory it wanted
2. the other process is another engine sized by a fraction of the same memory
3. page cache counted as used (unified memory; vLLM books it as non-torch memory)
4. a memory limit the engine reads moves its KV size; one it does not read OOM-kills it
5. a container's small /dev/shm
6. the kernel's reserve (vm.min_free_kbytes, watermarks) lowers MemAvailable
7. GPU memory the cgroup does not see, read from NVML per process where device-wide
   memory info is "Not Supported"
8. the KV cache cannot hold one request of max_model_len, so vLLM refuses to start
"""
