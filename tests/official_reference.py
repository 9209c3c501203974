"""A transcription of the official MemAE forward pass (donggong1/memae-anomaly-detection), used only as a test
oracle: our model must produce the same outputs from the same state_dict."""

import math

import torch
import torch.nn.functional as F
from torch import nn


def hard_shrink_relu(input, lambd=0.0, epsilon=1e-12):
    return (F.relu(input - lambd) * input) / (torch.abs(input - lambd) + epsilon)


class MemoryUnit(nn.Module):
    def __init__(self, mem_dim, fea_dim, shrink_thres=0.0025):
        super().__init__()
        self.mem_dim, self.fea_dim, self.shrink_thres = mem_dim, fea_dim, shrink_thres
        self.weight = nn.Parameter(torch.Tensor(mem_dim, fea_dim))
        stdv = 1.0 / math.sqrt(self.weight.size(1))
        self.weight.data.uniform_(-stdv, stdv)

    def forward(self, input):
        att_weight = F.softmax(F.linear(input, self.weight), dim=1)
        if self.shrink_thres > 0:
            att_weight = hard_shrink_relu(att_weight, lambd=self.shrink_thres)
            att_weight = F.normalize(att_weight, p=1, dim=1)
        output = F.linear(att_weight, self.weight.permute(1, 0))
        return {"output": output, "att": att_weight}


class MemModule(nn.Module):
    def __init__(self, mem_dim, fea_dim, shrink_thres=0.0025):
        super().__init__()
        self.mem_dim = mem_dim
        self.memory = MemoryUnit(mem_dim, fea_dim, shrink_thres)

    def forward(self, input):
        s = input.data.shape
        x = input.permute(0, 2, 3, 4, 1).contiguous().view(-1, s[1])
        y_and = self.memory(x)
        y = y_and["output"].view(s[0], s[2], s[3], s[4], s[1]).permute(0, 4, 1, 2, 3)
        att = y_and["att"].view(s[0], s[2], s[3], s[4], self.mem_dim).permute(0, 4, 1, 2, 3)
        return {"output": y, "att": att}


class AutoEncoderCov3DMem(nn.Module):
    def __init__(self, chnum_in, mem_dim, shrink_thres=0.0025):
        super().__init__()
        f, f2, fx2 = 128, 96, 256
        self.encoder = nn.Sequential(
            nn.Conv3d(chnum_in, f2, (3, 3, 3), stride=(1, 2, 2), padding=(1, 1, 1)), nn.BatchNorm3d(f2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv3d(f2, f, (3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1)), nn.BatchNorm3d(f),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv3d(f, fx2, (3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1)), nn.BatchNorm3d(fx2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv3d(fx2, fx2, (3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1)), nn.BatchNorm3d(fx2),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.mem_rep = MemModule(mem_dim=mem_dim, fea_dim=fx2, shrink_thres=shrink_thres)
        self.decoder = nn.Sequential(
            nn.ConvTranspose3d(fx2, fx2, (3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1), output_padding=(1, 1, 1)),
            nn.BatchNorm3d(fx2), nn.LeakyReLU(0.2, inplace=True),
            nn.ConvTranspose3d(fx2, f, (3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1), output_padding=(1, 1, 1)),
            nn.BatchNorm3d(f), nn.LeakyReLU(0.2, inplace=True),
            nn.ConvTranspose3d(f, f2, (3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1), output_padding=(1, 1, 1)),
            nn.BatchNorm3d(f2), nn.LeakyReLU(0.2, inplace=True),
            nn.ConvTranspose3d(f2, chnum_in, (3, 3, 3), stride=(1, 2, 2), padding=(1, 1, 1), output_padding=(0, 1, 1)),
        )

    def forward(self, x):
        f = self.encoder(x)
        res_mem = self.mem_rep(f)
        return {"output": self.decoder(res_mem["output"]), "att": res_mem["att"]}
