"""`whisperlite serve`: one local HTTP server with whisper.cpp's, OpenAI's and llama.cpp's APIs
and a web page, on Starlette + uvicorn. Each face is a module with a `routes()` list; the
models load once and every model step runs on the one engine thread (engine.py)."""
