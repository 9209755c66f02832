from inference_comparisons.cli import main

main()
