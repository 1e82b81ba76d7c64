"""`lrcn serve`: the HTTP and WebSocket app (app), background timeline jobs (jobs) and the web
page (web/)."""
