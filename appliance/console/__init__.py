"""The web console: server-rendered pages and small JavaScript, served by the API's aiohttp
server, with local users, sessions, CSRF protection and an audit log (issue 17)."""
