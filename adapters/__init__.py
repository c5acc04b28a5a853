"""Platform adapters: chat protocols in, the common event model out."""
