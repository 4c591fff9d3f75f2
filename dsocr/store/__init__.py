"""The service's database (SQLite embedded, PostgreSQL across replicas) and what is kept in it. Shared by every
layer; imports nothing of the service but `errors`."""
