//! The C allocator's tuning, set once at the start of the daemon's process (`baton run`, the
//! demo): one malloc arena, fixed mmap and trim thresholds.
//!
//! glibc gives each thread that meets a locked arena an arena of its own, up to eight per core;
//! every arena keeps the memory freed into it. The daemon allocates on the runtime loop's thread
//! and on each worker, so under load the extra arenas held about 10 MiB of a 100 MiB peak (the
//! `load` benchmark, measured with `MALLOC_ARENA_MAX=1`). Allocation is not where the daemon
//! spends its time, so the shared arena's lock costs nothing measurable. An operator's own
//! `MALLOC_ARENA_MAX` wins.
//!
//! glibc raises its mmap threshold to the size of any large block freed, up to 32 MiB, and its
//! trim threshold to twice that: after one large commit, every later large buffer came from the
//! heap and its pages stayed resident once freed. Fixed thresholds keep large buffers mapped and
//! unmapped on their own, and the heap's top handed back. An operator's `MALLOC_MMAP_THRESHOLD_`
//! or `MALLOC_TRIM_THRESHOLD_` wins.

/// Caps the allocator at one arena and fixes its thresholds, except where the environment says.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    for (variable, parameter, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 1),
        (
            "MALLOC_MMAP_THRESHOLD_",
            libc::M_MMAP_THRESHOLD,
            FIXED_THRESHOLD,
        ),
        (
            "MALLOC_TRIM_THRESHOLD_",
            libc::M_TRIM_THRESHOLD,
            FIXED_THRESHOLD,
        ),
    ] {
        if std::env::var_os(variable).is_some() {
            continue;
        }
        // SAFETY: `mallopt` only sets an allocator parameter; it is called before this process
        // starts any thread, and an unknown or refused value leaves the default (returns 0).
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(parameter, value);
        }
    }
}

/// Bytes from which a block gets its own mapping, and free bytes at the heap's top handed back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const FIXED_THRESHOLD: libc::c_int = 128 * 1024;

/// Other allocators and platforms keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}
