//! The one walk up a chain of backups by their parent links, used by the catalog (is a chain
//! whole?), restore's chain resolution and prune's retention.
//!
//! [`ancestors`] starts at one backup and follows `parent` links through a lookup the caller
//! gives. It has one guard for every walk: a parent must be older than its child (backup ids
//! sort in time), which ends every cycle, and it stops at the first link the lookup does not
//! know. [`Ancestors::end`] then says why the walk stopped, so each caller words its own error.

/// What the lookup says about one backup's parent link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link<K> {
    /// The chain starts here (a full backup, as the caller defines it).
    Root,
    /// The backup names this parent.
    Parent(K),
    /// The backup names a parent that is not a valid backup id.
    Invalid,
}

/// Why a walk stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkEnd<K> {
    /// The last backup yielded is the chain's first ([`Link::Root`]).
    Root,
    /// The lookup does not know this id: the start itself, or a parent named by the last
    /// backup yielded.
    Missing(K),
    /// The last backup yielded names a parent that is not a valid id.
    Invalid,
    /// The last backup yielded names this parent, which is not older than it: a loop, or a
    /// link no backup of offsite's writes.
    NotOlder(K),
}

/// A walk's lookup: a backup's value and its parent link, or `None` for a backup it does not
/// know. (A name for the closure type, so a walk can be returned as `impl Lookup<K, V>`.)
pub trait Lookup<K, V>: FnMut(&K) -> Option<(V, Link<K>)> {}

impl<K, V, F: FnMut(&K) -> Option<(V, Link<K>)>> Lookup<K, V> for F {}

/// The walk from a backup up its parent links: yields the looked-up value of the start, then
/// of its parent, and so on. See the module doc.
pub struct Ancestors<K, V, F> {
    next: Option<K>,
    child: Option<K>,
    lookup: F,
    end: Option<WalkEnd<K>>,
    _value: std::marker::PhantomData<fn() -> V>,
}

/// Walks up from `start`; `lookup` gives a backup's value and its parent link, or `None` for
/// a backup it does not know.
pub fn ancestors<K, V, F>(start: K, lookup: F) -> Ancestors<K, V, F>
where
    K: Ord + Clone,
    F: FnMut(&K) -> Option<(V, Link<K>)>,
{
    Ancestors {
        next: Some(start),
        child: None,
        lookup,
        end: None,
        _value: std::marker::PhantomData,
    }
}

impl<K, V, F> Ancestors<K, V, F> {
    /// Why the walk stopped; `None` while it has not.
    pub fn end(&self) -> Option<&WalkEnd<K>> {
        self.end.as_ref()
    }

    fn stop(&mut self, why: WalkEnd<K>) -> Option<V> {
        self.end = Some(why);
        None
    }
}

impl<K, V, F> Iterator for Ancestors<K, V, F>
where
    K: Ord + Clone,
    F: FnMut(&K) -> Option<(V, Link<K>)>,
{
    type Item = V;

    fn next(&mut self) -> Option<V> {
        let id = self.next.take()?;
        let Some((value, link)) = (self.lookup)(&id) else {
            return self.stop(WalkEnd::Missing(id));
        };
        if self.child.as_ref().is_some_and(|child| id >= *child) {
            return self.stop(WalkEnd::NotOlder(id));
        }
        match link {
            Link::Root => self.end = Some(WalkEnd::Root),
            Link::Invalid => self.end = Some(WalkEnd::Invalid),
            Link::Parent(p) => self.next = Some(p),
        }
        self.child = Some(id);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A walk over `links` (id -> parent; `None` for a root), yielding the ids.
    fn walk(links: &BTreeMap<u32, Option<u32>>, start: u32) -> (Vec<u32>, WalkEnd<u32>) {
        let mut w = ancestors(start, |id: &u32| {
            links
                .get(id)
                .map(|p| (*id, p.map_or(Link::Root, Link::Parent)))
        });
        let ids: Vec<u32> = w.by_ref().collect();
        (ids, w.end().cloned().expect("the walk ended"))
    }

    #[test]
    fn a_whole_chain_ends_at_its_root() {
        let links = BTreeMap::from([(1, None), (2, Some(1)), (3, Some(2))]);
        assert_eq!(walk(&links, 3), (vec![3, 2, 1], WalkEnd::Root));
        assert_eq!(walk(&links, 1), (vec![1], WalkEnd::Root));
    }

    #[test]
    fn a_missing_parent_or_start_is_named() {
        let links = BTreeMap::from([(2, Some(1)), (3, Some(2))]);
        assert_eq!(walk(&links, 3), (vec![3, 2], WalkEnd::Missing(1)));
        assert_eq!(walk(&links, 7), (vec![], WalkEnd::Missing(7)));
    }

    #[test]
    fn a_cycle_or_a_newer_parent_ends_the_walk() {
        let cycle = BTreeMap::from([(1, Some(2)), (2, Some(1))]);
        assert_eq!(walk(&cycle, 2), (vec![2, 1], WalkEnd::NotOlder(2)));
        let own = BTreeMap::from([(5, Some(5))]);
        assert_eq!(walk(&own, 5), (vec![5], WalkEnd::NotOlder(5)));
        let newer = BTreeMap::from([(1, Some(9)), (9, None)]);
        assert_eq!(walk(&newer, 1), (vec![1], WalkEnd::NotOlder(9)));
    }

    #[test]
    fn an_invalid_link_is_reported() {
        let mut w = ancestors(4u32, |id: &u32| Some((*id, Link::Invalid)));
        assert_eq!(w.by_ref().collect::<Vec<_>>(), [4]);
        assert_eq!(w.end(), Some(&WalkEnd::Invalid));
    }

    #[test]
    fn a_long_chain_is_walked_whole_in_order() {
        let links: BTreeMap<u32, Option<u32>> =
            (0..10_000u32).map(|i| (i, i.checked_sub(1))).collect();
        let (ids, end) = walk(&links, 9_999);
        assert_eq!(ids.len(), 10_000);
        assert!(ids.windows(2).all(|w| w[0] == w[1] + 1));
        assert_eq!(end, WalkEnd::Root);
    }
}
