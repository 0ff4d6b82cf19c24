//! Random identifiers for the lab's objects (pod, service account, node uids; token ids).

use rand::Rng;

/// A random version-4 UUID in its usual text form, as Kubernetes gives objects.
pub fn uuid() -> String {
    pod_identity_contracts::ids::uuid_v4(rand::rng().random())
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_are_v4_shaped_and_differ() {
        let a = super::uuid();
        let b = super::uuid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(a.matches('-').count(), 4);
    }
}
