"""infercore inside other serving engines: ``infercore.integrations.ray`` (Ray Serve).

Each integration imports its engine only when used, and names the pip extra that installs it.
"""
