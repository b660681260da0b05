//! Which native hashes (MD5, SHA-1) a backup records next to each stored object's SHA-256:
//! the ones some provider of the run lists without reading its objects
//! ([`Provider::native_hashes`]), so that `status` can catch a corrupt object from a
//! listing. Hashes no provider lists are not computed: MD5 alone costs more CPU than the
//! SHA-256.
//!
//! The providers are asked as the run starts, and the stream does not wait for them: until
//! every one has answered, shards get both hashes. So a provider slow to answer never holds
//! up the source, and no shard lacks a hash that one of the run's providers lists.

use crate::provider::{DynProvider, NativeHashes};
use futures::FutureExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::task::JoinSet;

/// The native hashes the run's providers list, as far as they have answered.
#[derive(Debug, Default)]
pub(super) struct Natives {
    /// Providers that have not answered yet.
    pending: AtomicUsize,
    md5: AtomicBool,
    sha1: AtomicBool,
}

impl Natives {
    /// Asks every provider in `providers`. An answer that needs no waiting (a local path, a
    /// `list_hashes` set to true or false) is taken at once; the others arrive while the
    /// returned tasks run (dropping them stops asking, and shards then get both hashes).
    pub fn ask(providers: &[DynProvider]) -> (Arc<Natives>, JoinSet<()>) {
        let natives = Arc::new(Natives {
            pending: AtomicUsize::new(providers.len()),
            ..Natives::default()
        });
        let mut asking = JoinSet::new();
        for p in providers {
            let p = p.clone();
            let mut answer = Box::pin(async move { p.native_hashes().await });
            match (&mut answer).now_or_never() {
                Some(lists) => natives.answered(lists),
                None => {
                    let natives = natives.clone();
                    asking.spawn(async move { natives.answered(answer.await) });
                }
            }
        }
        (natives, asking)
    }

    /// The native hashes of a run whose providers answered `answers`.
    #[cfg(test)]
    pub fn answered_by(answers: &[NativeHashes]) -> Arc<Natives> {
        let natives = Arc::new(Natives {
            pending: AtomicUsize::new(answers.len()),
            ..Natives::default()
        });
        answers.iter().for_each(|a| natives.answered(*a));
        natives
    }

    fn answered(&self, lists: NativeHashes) {
        self.md5.fetch_or(lists.md5, Ordering::Relaxed);
        self.sha1.fetch_or(lists.sha1, Ordering::Relaxed);
        // Release: whoever sees the count drop sees the flags set before it.
        self.pending.fetch_sub(1, Ordering::Release);
    }

    /// The hashes a shard hashed now records: all while a provider has not answered.
    pub fn wanted(&self) -> NativeHashes {
        if self.pending.load(Ordering::Acquire) > 0 {
            return NativeHashes::ALL;
        }
        NativeHashes {
            md5: self.md5.load(Ordering::Relaxed),
            sha1: self.sha1.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Layer, MemoryProvider};
    use futures::future::BoxFuture;
    use tokio::sync::Notify;

    const MD5: NativeHashes = NativeHashes {
        md5: true,
        sha1: false,
    };

    #[test]
    fn the_run_records_what_any_provider_lists() {
        let none = NativeHashes::NONE;
        assert_eq!(Natives::answered_by(&[none, none]).wanted(), none);
        assert_eq!(Natives::answered_by(&[none, MD5]).wanted(), MD5);
        assert_eq!(Natives::answered_by(&[]).wanted(), none);
    }

    /// A provider that answers `NONE` once `go` is notified.
    struct Late(MemoryProvider, Arc<Notify>);

    impl Layer for Late {
        type Inner = MemoryProvider;

        fn inner(&self) -> &MemoryProvider {
            &self.0
        }

        fn native_hashes(&self) -> BoxFuture<'_, NativeHashes> {
            Box::pin(async move {
                self.1.notified().await;
                NativeHashes::NONE
            })
        }
    }

    #[tokio::test]
    async fn an_answer_that_takes_a_while_counts_once_it_arrives() {
        let go = Arc::new(Notify::new());
        let late: DynProvider = Arc::new(Late(MemoryProvider::new("late"), go.clone()));
        let (natives, mut asking) = Natives::ask(&[late]);
        assert_eq!(natives.wanted(), NativeHashes::ALL, "not answered yet");
        go.notify_one();
        while asking.join_next().await.is_some() {}
        assert_eq!(natives.wanted(), NativeHashes::NONE);
    }

    #[test]
    fn until_every_provider_answers_shards_get_both() {
        let natives = Arc::new(Natives {
            pending: AtomicUsize::new(2),
            ..Natives::default()
        });
        natives.answered(NativeHashes::NONE);
        assert_eq!(natives.wanted(), NativeHashes::ALL);
        natives.answered(NativeHashes::NONE);
        assert_eq!(natives.wanted(), NativeHashes::NONE);
    }
}
