"""What was issued, read back: customer history, the issuance export, segments, paging."""
