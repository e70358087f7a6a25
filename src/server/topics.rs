//! Topics (rooms): named sets of connections for publish/subscribe.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// Topic name -> member slab keys. A connection's own list of topics lives
/// in the connection, so closing it leaves every topic without a scan.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    members: HashMap<Rc<str>, HashSet<usize>>,
}

impl Topics {
    /// Adds `key` to `topic`; returns the shared name if it was not a
    /// member yet (for the connection to remember).
    pub(crate) fn subscribe(&mut self, topic: &str, key: usize) -> Option<Rc<str>> {
        if let Some((name, set)) = self.members.get_key_value(topic) {
            if set.contains(&key) {
                return None;
            }
            let name = name.clone();
            self.members.get_mut(topic).expect("just found").insert(key);
            return Some(name);
        }
        let name: Rc<str> = Rc::from(topic);
        self.members.insert(name.clone(), HashSet::from([key]));
        Some(name)
    }

    /// Removes `key` from `topic`; empty topics are forgotten.
    pub(crate) fn unsubscribe(&mut self, topic: &str, key: usize) -> bool {
        let Some(set) = self.members.get_mut(topic) else {
            return false;
        };
        let removed = set.remove(&key);
        if set.is_empty() {
            self.members.remove(topic);
        }
        removed
    }

    /// The members of `topic` (slab keys).
    pub(crate) fn members(&self, topic: &str) -> impl Iterator<Item = usize> + '_ {
        self.members.get(topic).into_iter().flatten().copied()
    }

    pub(crate) fn contains(&self, topic: &str, key: usize) -> bool {
        self.members
            .get(topic)
            .is_some_and(|set| set.contains(&key))
    }

    pub(crate) fn count(&self, topic: &str) -> usize {
        self.members.get(topic).map_or(0, HashSet::len)
    }

    /// The number of topics with at least one member.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_is_idempotent_and_empty_topics_vanish() {
        let mut topics = Topics::default();
        assert!(topics.subscribe("a", 1).is_some());
        assert!(topics.subscribe("a", 1).is_none());
        assert!(topics.subscribe("a", 2).is_some());
        assert_eq!(topics.count("a"), 2);
        assert!(topics.unsubscribe("a", 1));
        assert!(!topics.unsubscribe("a", 1));
        assert!(topics.unsubscribe("a", 2));
        assert_eq!(topics.len(), 0);
    }
}
