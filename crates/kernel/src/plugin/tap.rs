//! The taps the kernel invokes, by name. Plugins may implement further
//! taps of their own (any `tap_[a-z0-9_]+` in a manifest); the kernel's
//! call sites name theirs through [`Tap`], so a tap's name and its deadline
//! class are written once.

/// A tap the kernel itself invokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tap {
    /// After an item was created: input the item, output ignored.
    ItemInsert,
    /// After an item was saved, live or in a stage.
    ItemUpdate,
    /// After an item was deleted.
    ItemDelete,
    /// Extra text to index for an item.
    ItemUpdateIndex,
    /// Once per cron pass.
    Cron,
    /// The queues a plugin declares.
    QueueInfo,
    /// One job of a plugin's queue.
    QueueWorker,
    /// The batch operations a plugin declares.
    BatchInfo,
    /// One chunk of a plugin's batch operation.
    BatchChunk,
}

impl Tap {
    pub const ALL: [Tap; 9] = [
        Tap::ItemInsert,
        Tap::ItemUpdate,
        Tap::ItemDelete,
        Tap::ItemUpdateIndex,
        Tap::Cron,
        Tap::QueueInfo,
        Tap::QueueWorker,
        Tap::BatchInfo,
        Tap::BatchChunk,
    ];

    /// The exported function's name.
    pub const fn name(self) -> &'static str {
        match self {
            Tap::ItemInsert => "tap_item_insert",
            Tap::ItemUpdate => "tap_item_update",
            Tap::ItemDelete => "tap_item_delete",
            Tap::ItemUpdateIndex => "tap_item_update_index",
            Tap::Cron => "tap_cron",
            Tap::QueueInfo => "tap_queue_info",
            Tap::QueueWorker => "tap_queue_worker",
            Tap::BatchInfo => "tap_batch_info",
            Tap::BatchChunk => "tap_batch_chunk",
        }
    }

    /// The kernel tap of that name, if it is one.
    pub fn from_name(name: &str) -> Option<Tap> {
        Tap::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Runs in the background (cron, queue workers, batch chunks) with the
    /// long deadline, rather than inside a request.
    pub const fn is_background(self) -> bool {
        matches!(self, Tap::Cron | Tap::QueueWorker | Tap::BatchChunk)
    }
}

impl AsRef<str> for Tap {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

impl std::fmt::Display for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_valid_manifest_names() {
        for tap in Tap::ALL {
            assert_eq!(Tap::from_name(tap.name()), Some(tap));
            assert!(
                super::super::manifest::check_tap_name(tap.name()).is_ok(),
                "{tap}"
            );
        }
        assert_eq!(Tap::from_name("tap_order"), None);
    }

    #[test]
    fn only_cron_queue_workers_and_batch_chunks_are_background() {
        let background: Vec<_> = Tap::ALL.into_iter().filter(|t| t.is_background()).collect();
        assert_eq!(
            background,
            vec![Tap::Cron, Tap::QueueWorker, Tap::BatchChunk]
        );
    }
}
