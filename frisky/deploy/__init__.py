"""Starting and supervising processes: LocalCluster, the fork server."""
