"""What the test modules share: the loopback model server, sockets and pages, server processes.

- `environment`: the tests' environment, loaded first as a pytest plugin (pyproject's addopts).
- `fake_openai`: the loopback OpenAI server and the streams it replays.
- `chat`: chat and API sockets on the ASGI application, and reading their frames.
- `adapters`: the two adapters (Chat Completions, Responses) to parametrise over, and reading
  the provider events they yield.
- `server_shapes`: the real servers' stream shapes, read from tests/data/server_shapes/.
- `scripted`: scripted providers for the streaming core's loop.
- `servers`: server processes (Daphne, `manage.py serve`) and a site's environment.
- `pages`: a chat page's socket to a server process.
- `browser`: Chromium and a signed-up page.
- `nginx`: the shipped nginx configuration in front of workers.
- `crashing_model_server`: a stand-in for llama.cpp's server that segfaults (run as a script).

Fixtures are in tests/conftest.py; nothing here imports it.
"""
