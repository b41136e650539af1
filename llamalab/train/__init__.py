"""The ChatGPT recipe's stages as thin layers over TRL: ``sft``, ``reward`` (and later ``ppo``).

Each stage reads a profile, writes ``runs/<profile>/<stage>/`` (adapter, merged model,
``metrics.json``, ``run_info.json``), and the next stage reads the previous stage's directory.
"""
