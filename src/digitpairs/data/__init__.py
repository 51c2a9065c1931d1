"""The data: MNIST fetched and verified (mnist), the rounds' pair sets (pairs), and the user's own images
(images)."""
