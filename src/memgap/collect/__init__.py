"""Collectors: pure parsers of kernel, NVML and engine text plus thin readers over an
injected root (``proc_root``, a ``CgroupRef``), so tests read fake trees."""
