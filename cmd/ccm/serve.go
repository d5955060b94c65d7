package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	cloudcontrollerconfig "k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/klog/v2"

	"github.com/tenantcloud/tenantcloud/pkg/cli"
	"github.com/tenantcloud/tenantcloud/pkg/cloud"
	"github.com/tenantcloud/tenantcloud/pkg/config"
)

// controllers are the framework controllers the ccm runs. The route controller is not even
// registered: the tenant's CNI routes between VMs, there are no cloud routes.
var controllers = []string{names.CloudNodeController, names.CloudNodeLifecycleController, names.ServiceLBController}

// serve runs the upstream cloud-controller-manager (app.NewCloudControllerManagerCommand) with
// the registered tenantcloud provider. The command is built and given its flags here rather
// than exposed: --cloud-config is the same tenant config file as --config, --kubeconfig its
// tenantKubeconfig, and everything else is fixed or comes from the ccm's own flags, so the two
// files can never disagree.
func serve(ctx context.Context, cfg *config.Config, opts cli.Options) error {
	flags.metrics = opts.Metrics
	// Instantiate through the registry first: a bad config or infra kubeconfig is reported
	// here as an error, not as a crash inside the framework.
	provider, err := cloudprovider.InitCloudProvider(cloud.ProviderName, opts.ConfigPath)
	if err != nil {
		return err
	}
	if provider == nil {
		return errors.New("cloud provider " + cloud.ProviderName + " is not registered")
	}

	ccmOpts, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		return fmt.Errorf("building cloud-controller-manager options: %w", err)
	}
	constructors := map[string]app.ControllerInitFuncConstructor{}
	for _, name := range controllers {
		constructors[name] = app.DefaultInitFuncConstructors[name]
	}
	initCloud := func(*cloudcontrollerconfig.CompletedConfig) cloudprovider.Interface { return provider }
	cmd := app.NewCloudControllerManagerCommand(ccmOpts, initCloud, constructors, names.CCMControllerAliases(),
		cliflag.NamedFlagSets{}, ctx.Done())
	cmd.SetArgs(frameworkArgs(cfg, opts.ConfigPath))
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetOut(io.Discard)

	klog.InfoS("Starting cloud-controller-manager", "provider", cloud.ProviderName, "controllers", controllers,
		"tenantKubeconfig", cfg.TenantKubeconfig, "leaderElect", flags.leaderElect)
	if err := cmd.ExecuteContext(ctx); err != nil {
		return fmt.Errorf("cloud-controller-manager: %w", err)
	}
	return nil
}

func frameworkArgs(cfg *config.Config, configPath string) []string {
	args := []string{
		"--cloud-provider=" + cloud.ProviderName,
		"--cloud-config=" + configPath,
		"--kubeconfig=" + cfg.TenantKubeconfig,
		"--cluster-name=" + cfg.ClusterName,
		"--controllers=*",
		"--configure-cloud-routes=false",
		"--allocate-node-cidrs=false",
		"--use-service-account-credentials=false",
		// The framework re-applies its own logging options; keep the verbosity given to ccm.
		"--v=" + strconv.Itoa(verbosity()),
	}
	return append(args, flags.frameworkArgs()...)
}

// verbosity is the klog -v level currently in effect.
func verbosity() int {
	v := 0
	for klog.V(klog.Level(v + 1)).Enabled() {
		v++
		if v >= 10 {
			break
		}
	}
	return v
}
