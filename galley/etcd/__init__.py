"""etcd's room: what galley knows of etcd below the component that deploys it."""
