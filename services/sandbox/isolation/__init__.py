"""How untrusted code is contained: bubblewrap namespaces, or Landlock + seccomp + rlimits."""
