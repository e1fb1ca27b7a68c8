//! Giving freed heap memory back to the kernel.
//!
//! glibc's allocator keeps the memory a burst of clients freed (in its arenas, one per thread
//! that allocated) and returns it only when the top of a heap is free. After thousands of
//! clients came and went the daemon's RSS then stays near its peak although nothing is
//! allocated there. [`release_free_memory`] asks glibc to return every free page
//! (`malloc_trim(0)`); the housekeeping task calls it when the daemon goes idle (nothing to
//! watch), so it runs at most once per busy-to-idle transition and never on the RT thread.
//! This module holds the daemon's one `unsafe` call outside `identity.rs` and `engine/rt.rs`.

/// Returns free heap pages to the kernel; whether any were released.
pub fn release_free_memory() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim only walks glibc's own heaps under their locks; it takes no
        // pointer from us and is safe to call from any thread at any time.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
    use super::*;

    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    #[cfg(target_env = "gnu")]
    fn freed_heap_pages_go_back_to_the_kernel() {
        // 64 MB in small blocks (below the mmap threshold, so in a heap); every 16th is kept,
        // so the heap's top never frees and glibc keeps the pages in between until trimmed.
        let mut blocks: Vec<Vec<u8>> = (0..64_000).map(|i| vec![i as u8 | 1; 1000]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(16).map(std::mem::take).collect();
        drop(blocks);
        let before = rss_anon_kib();
        assert!(release_free_memory(), "malloc_trim released nothing");
        let after = rss_anon_kib();
        assert!(
            after + 16 * 1024 < before,
            "RssAnon {before} KiB before the trim, {after} KiB after"
        );
        assert!(kept.iter().all(|b| b.len() == 1000 && b[0] != 0));
    }
}
