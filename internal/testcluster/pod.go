package testcluster

// The smallest subset of a core/v1 Pod that static pod manifests need. Field
// order follows what the kubelet and the OpenShift installer emit.
type pod struct {
	Kind       string   `json:"kind"`
	APIVersion string   `json:"apiVersion"`
	Metadata   podMeta  `json:"metadata"`
	Spec       podSpec  `json:"spec"`
	Status     struct{} `json:"status"`
}

type podMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace"`
	CreationTimestamp *string           `json:"creationTimestamp"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
}

type podSpec struct {
	Volumes           []volume     `json:"volumes"`
	Containers        []container  `json:"containers"`
	HostNetwork       bool         `json:"hostNetwork"`
	PriorityClassName string       `json:"priorityClassName"`
	Tolerations       []toleration `json:"tolerations"`
}

type volume struct {
	Name     string   `json:"name"`
	HostPath hostPath `json:"hostPath"`
}

type hostPath struct {
	Path string `json:"path"`
	Type string `json:"type,omitempty"`
}

type container struct {
	Name         string        `json:"name"`
	Image        string        `json:"image"`
	Command      []string      `json:"command"`
	Args         []string      `json:"args,omitempty"`
	VolumeMounts []volumeMount `json:"volumeMounts"`
}

type volumeMount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
}

type toleration struct {
	Operator string `json:"operator"`
}

func newStaticPod(name, namespace, image string, labels map[string]string, vols []volume, cmd []string) pod {
	mounts := make([]volumeMount, len(vols))
	for i, v := range vols {
		mounts[i] = volumeMount{Name: v.Name, MountPath: v.HostPath.Path}
	}
	return pod{
		Kind:       "Pod",
		APIVersion: "v1",
		Metadata:   podMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: podSpec{
			Volumes:           vols,
			Containers:        []container{{Name: name, Image: image, Command: cmd, VolumeMounts: mounts}},
			HostNetwork:       true,
			PriorityClassName: "system-node-critical",
			Tolerations:       []toleration{{Operator: "Exists"}},
		},
	}
}

func hostPathVolume(name, path string) volume {
	return volume{Name: name, HostPath: hostPath{Path: path}}
}
