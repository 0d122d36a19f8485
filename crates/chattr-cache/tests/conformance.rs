//! Runs the cache conformance suite against [`MemoryCache`].

use std::sync::Arc;

use chattr_cache::memory::MemoryCache;
use chattr_cache::DynCache;

async fn make_cache() -> DynCache {
    Arc::new(MemoryCache::default())
}

chattr_cache::cache_conformance_tests!(make_cache());
