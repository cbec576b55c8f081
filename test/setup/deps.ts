// Placeholder replaced by the CI/infra work in this session: installs Debian packages the tests need.
