"""Framework integrations: `chunkcache.integrations.langchain` (extra `[langchain]`) and
`chunkcache.integrations.llamaindex` (extra `[llamaindex]`). Each module imports its framework,
so import the one you use; `backends` (library or service) needs neither."""
