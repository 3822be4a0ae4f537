//! The C allocator's tuning, set once at the start of the process: one malloc arena.
//!
//! glibc gives each thread that meets a locked arena an arena of its own, up to eight per core;
//! every arena keeps the memory freed into it. The daemon allocates on the runtime loop's thread
//! and on each worker, so under load the extra arenas held about 10 MiB of a 100 MiB peak (the
//! `load` benchmark, measured with `MALLOC_ARENA_MAX=1`). Allocation is not where the daemon
//! spends its time, so the shared arena's lock costs nothing measurable. An operator's own
//! `MALLOC_ARENA_MAX` wins.

/// Caps the allocator at one arena unless the environment already says how many.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: `mallopt` only sets an allocator parameter; it is called before this process
    // starts any thread, and an unknown or refused value leaves the default (returns 0).
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Other allocators and platforms keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}
