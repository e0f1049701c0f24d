"""The usage dashboard: one self-contained page that signs in with Cognito and charts /usage."""
