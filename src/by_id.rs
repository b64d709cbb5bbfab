//! The context table: the VM's root and HTTP contexts by the id the host gives them.

/// Contexts by id. `index` holds (id, slot) sorted by id — the host numbers contexts in
/// increasing order, so a new one is appended — and a lookup is a binary search: a gateway with
/// thousands of streams in flight pays O(log n) per callback, not a scan. Contexts live in
/// reusable slots, so none moves when another ends (only the 8-byte index entries do). A
/// `BTreeMap` per context type cost ~10 KB of module for the same.
pub(crate) struct ById<T> {
    index: Vec<(u32, u32)>,
    slots: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Default for ById<T> {
    fn default() -> Self {
        ById {
            index: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> ById<T> {
    fn find(&self, id: u32) -> Result<usize, usize> {
        self.index.binary_search_by_key(&id, |&(i, _)| i)
    }

    fn slot(&self, id: u32) -> Option<usize> {
        let at = self.find(id).ok()?;
        self.index.get(at).map(|&(_, slot)| slot as usize)
    }

    pub(crate) fn get(&self, id: u32) -> Option<&T> {
        self.slots.get(self.slot(id)?)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        let slot = self.slot(id)?;
        self.slots.get_mut(slot)?.as_mut()
    }

    /// Replaces the context of a reused id, as the host starts it afresh.
    pub(crate) fn insert(&mut self, id: u32, item: T) {
        match self.find(id) {
            Ok(_) => {
                if let Some(slot) = self.get_mut(id) {
                    *slot = item;
                }
            }
            Err(at) => {
                let slot = match self.free.pop() {
                    Some(free) => {
                        if let Some(place) = self.slots.get_mut(free as usize) {
                            *place = Some(item);
                        }
                        free
                    }
                    None => {
                        self.slots.push(Some(item));
                        u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
                    }
                };
                self.index.insert(at, (id, slot));
            }
        }
    }

    /// Takes the item out; its slot is reused.
    pub(crate) fn remove(&mut self, id: u32) -> Option<T> {
        let at = self.find(id).ok()?;
        let (_, slot) = self.index.remove(at);
        let item = self.slots.get_mut(slot as usize)?.take();
        self.free.push(slot);
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Contexts are found by id however many are in flight and in whatever order they end; a
    /// reused id replaces its context; slots are reused.
    #[test]
    fn contexts_are_found_by_id_among_thousands_in_flight() {
        let mut contexts = ById::default();
        for id in 1..=2000u32 {
            contexts.insert(id, id * 10);
        }
        for id in (1..=2000u32).step_by(2) {
            contexts.remove(id);
        }
        for id in 1..=2000u32 {
            let want = (id % 2 == 0).then_some(id * 10);
            assert_eq!(contexts.get(id).copied(), want, "context {id}");
        }
        contexts.insert(5000, 1);
        contexts.insert(3, 2); // out of order: kept sorted
        contexts.insert(4, 3); // a reused id: replaced
        assert_eq!(
            (contexts.get(5000), contexts.get(3), contexts.get(4)),
            (Some(&1), Some(&2), Some(&3))
        );
        assert_eq!(contexts.slots.len(), 2000, "freed slots are reused");
        assert_eq!(contexts.get(7), None, "an ended context is gone");
    }
}
