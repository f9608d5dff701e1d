"""galley: provision and operate Kubernetes on DigitalOcean droplets with pyinfra."""
