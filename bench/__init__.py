"""Side-by-side benchmarks of crispy against containerd (`make bench`)."""
