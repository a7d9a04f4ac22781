//! Survive files truncated under a memory map.
//!
//! Reading a mapped page past the end of a file that was truncated after mapping raises
//! SIGBUS, which kills the process — and `cp new.img ap1g8` truncates `ap1g8` in place. So
//! every served mapping is registered here, and a SIGBUS handler checks the faulting
//! address: inside a registered mapping, it maps zero pages over the rest of that mapping
//! (`MAP_FIXED`, async-signal-safe) and marks it poisoned; the faulting read resumes and
//! reads zeros, and the transfer, which checks [`Guard::is_poisoned`] after copying each
//! block and before sending it, aborts instead of sending them. Any other SIGBUS goes to the
//! handler that was installed before (Rust's stack-overflow guard, or the default action).
//!
//! The registry is a fixed array of atomics: the handler takes no lock and allocates nothing.

use std::ptr;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// How many mappings can be guarded at once; beyond that, mappings are served unguarded.
const SLOTS: usize = 4096;

struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    poisoned: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    poisoned: AtomicBool::new(false),
};

static REGISTRY: [Slot; SLOTS] = [EMPTY; SLOTS];
static INSTALL: Once = Once::new();
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());

/// A registration of one mapping; unregisters on drop (drop it before unmapping).
#[derive(Debug)]
pub struct Guard {
    slot: Option<usize>,
}

impl Guard {
    /// Registers `len` bytes at `start`. Returns an inert guard when the registry is full.
    pub fn register(start: *const u8, len: usize) -> Guard {
        install();
        if len == 0 {
            return Guard { slot: None };
        }
        for (i, s) in REGISTRY.iter().enumerate() {
            // Claim a free slot by setting its start; len follows, so the handler, which
            // checks both, never sees a half-filled slot as covering an address.
            if s.start
                .compare_exchange(0, start as usize, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                s.poisoned.store(false, Ordering::Release);
                s.len.store(len, Ordering::Release);
                return Guard { slot: Some(i) };
            }
        }
        Guard { slot: None }
    }

    /// True once a read of this mapping hit a page the file no longer has.
    pub fn is_poisoned(&self) -> bool {
        self.slot
            .and_then(|i| REGISTRY.get(i))
            .is_some_and(|s| s.poisoned.load(Ordering::Acquire))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(s) = self.slot.and_then(|i| REGISTRY.get(i)) {
            s.len.store(0, Ordering::Release);
            s.start.store(0, Ordering::Release);
        }
    }
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: plain sigaction(2) calls with properly initialised structs; the previous
        // action is leaked into a static so the handler can chain to it for ever.
        unsafe {
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = handler as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut new.sa_mask);
            let old = Box::into_raw(Box::new(std::mem::zeroed::<libc::sigaction>()));
            if libc::sigaction(libc::SIGBUS, &new, old) == 0 {
                PREVIOUS.store(old, Ordering::Release);
            }
        }
    });
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in &REGISTRY {
        let start = s.start.load(Ordering::Acquire);
        let len = s.len.load(Ordering::Acquire);
        if start == 0 || len == 0 || addr < start || addr >= start + len {
            continue;
        }
        // SAFETY: sysconf and mmap are async-signal-safe. The range lies inside a mapping
        // this process owns and that stays mapped while a reader is faulting in it; it is
        // replaced by anonymous zero pages of the same protection.
        let ok = unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
            let from = addr & !(page - 1);
            let end = start + len;
            let p = libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            p != libc::MAP_FAILED
        };
        if ok {
            s.poisoned.store(true, Ordering::Release);
            return;
        }
        break;
    }
    chain(sig, info, ctx);
}

fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS.load(Ordering::Acquire);
    // SAFETY: `prev` is null or the leaked sigaction saved at install time.
    unsafe {
        if !prev.is_null() {
            let p = &*prev;
            if p.sa_flags & libc::SA_SIGINFO != 0 && p.sa_sigaction > libc::SIG_IGN {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(p.sa_sigaction);
                f(sig, info, ctx);
                return;
            }
            if p.sa_flags & libc::SA_SIGINFO == 0 && p.sa_sigaction > libc::SIG_IGN {
                let f: extern "C" fn(libc::c_int) = std::mem::transmute(p.sa_sigaction);
                f(sig);
                return;
            }
        }
        // Default action: restore it and return; the access faults again and the process
        // dies with SIGBUS as it would have without us.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGBUS, &dfl, ptr::null_mut());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn truncated_file_reads_zeros_and_poisons_instead_of_killing() {
        let mut f = tempfile::tempfile().unwrap();
        let page = 4096;
        f.write_all(&vec![0xAB; page * 4]).unwrap();
        // SAFETY: test-only read-only map of a file we own.
        let map = unsafe { memmap2::Mmap::map(&f).unwrap() };
        let guard = Guard::register(map.as_ptr(), map.len());
        assert!(!guard.is_poisoned());
        assert_eq!(map[page * 3], 0xAB);
        // Someone copies a shorter image over the file in place.
        f.set_len(page as u64).unwrap();
        let mut copy = vec![0u8; page];
        copy.copy_from_slice(&map[page * 2..page * 3]);
        assert!(guard.is_poisoned(), "the fault must be recorded");
        assert!(copy.iter().all(|&b| b == 0));
        // The part still inside the file is intact.
        assert_eq!(map[10], 0xAB);
        drop(guard);
    }

    #[test]
    fn slots_are_reused() {
        let data = [1u8; 16];
        for _ in 0..(SLOTS * 2) {
            let g = Guard::register(data.as_ptr(), data.len());
            assert!(g.slot.is_some());
        }
    }
}
