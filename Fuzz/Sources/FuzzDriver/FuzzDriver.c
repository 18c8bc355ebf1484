// LLVMFuzzerRunDriver comes from libFuzzer (-sanitize=fuzzer); this target only declares it.
