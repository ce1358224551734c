"""repedge provisioning: signed model bundles, carried to air-gapped nodes on USB."""
