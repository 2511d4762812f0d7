"""pytest settings for executing the notebooks with nbval (``make test``)."""


def pytest_ignore_collect(collection_path, config):
    """The paper-reproduction notebook needs the paper's released tables, which live
    beside the development checkout, not in the repository: without them it is not
    collected (its analysis tests skip with the reason)."""
    if collection_path.name == "05_paper_results.ipynb":
        from robustlib import paths

        return paths.paper_results_dir() is None
    return None
