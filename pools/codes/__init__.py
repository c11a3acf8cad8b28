"""What is in a pool: code files, uploads, generation, voiding, listing, counts, low-stock alerts."""
