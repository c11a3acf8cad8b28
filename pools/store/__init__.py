"""How the store keeps its data: engine set-up and migrations, tables, dialect SQL, the clock."""
