//! Which webhooks a change goes to.

/// The webhooks (by index) a change goes to: a bit set of any size. The
/// first 64 webhooks live inline, so the common case allocates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Targets {
    first: u64,
    /// Webhooks 64 and up, 64 to a word.
    rest: Vec<u64>,
}

impl Targets {
    pub(crate) fn contains(&self, webhook: usize) -> bool {
        let (word, bit) = (webhook / 64, webhook % 64);
        let bits = match word {
            0 => self.first,
            n => self.rest.get(n - 1).copied().unwrap_or(0),
        };
        bits & (1 << bit) != 0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first == 0 && self.rest.iter().all(|word| *word == 0)
    }

    #[cfg(test)]
    pub(crate) fn of(webhooks: &[usize]) -> Targets {
        let mut targets = Targets::default();
        for webhook in webhooks {
            targets.insert(*webhook);
        }
        targets
    }

    pub(crate) fn remove(&mut self, webhook: usize) {
        let (word, bit) = (webhook / 64, webhook % 64);
        match word {
            0 => self.first &= !(1 << bit),
            n => {
                if let Some(bits) = self.rest.get_mut(n - 1) {
                    *bits &= !(1 << bit);
                }
            }
        }
    }

    pub(crate) fn insert(&mut self, webhook: usize) {
        let (word, bit) = (webhook / 64, webhook % 64);
        if word == 0 {
            self.first |= 1 << bit;
            return;
        }
        if self.rest.len() < word {
            self.rest.resize(word, 0);
        }
        self.rest[word - 1] |= 1 << bit;
    }
}
