//! How many live streams one token holder may have open at once, in this gateway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open live streams per token holder, in this gateway.
pub struct TailQuota {
    per_holder: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream counted against its holder until dropped.
pub struct TailPermit {
    holder: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl TailQuota {
    pub fn new(per_holder: usize) -> TailQuota {
        TailQuota {
            per_holder,
            open: Arc::default(),
        }
    }

    /// A permit for one more stream of `holder`, unless it has the most it may.
    pub fn acquire(&self, holder: &str) -> Option<TailPermit> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(holder.to_owned()).or_insert(0);
        if *count >= self.per_holder {
            return None;
        }
        *count += 1;
        Some(TailPermit {
            holder: holder.to_owned(),
            open: self.open.clone(),
        })
    }
}

impl Drop for TailPermit {
    fn drop(&mut self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.holder) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.holder);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_gets_at_most_its_quota_of_streams_back_when_they_close() {
        let quota = TailQuota::new(2);
        let first = quota.acquire("a").unwrap();
        let _second = quota.acquire("a").unwrap();
        assert!(quota.acquire("a").is_none());
        assert!(quota.acquire("b").is_some());
        drop(first);
        assert!(quota.acquire("a").is_some());
    }
}
